"""``fastvla record``: record scripted-expert demonstrations into a LeRobot v3.0 dataset.

Examples::

    fastvla record --env fastvla/PickCube-v0 --episodes 200 --cameras front,wrist --out data/pick
    # one multi-task dataset, 100 episodes of each task (balanced), instructions never naming purple:
    fastvla record --env fastvla/ReachCube-v0 fastvla/PickCube-v0 fastvla/PushCube-v0 --episodes-per-env 100 \
        --env-kwargs '{"instruction_colors": ["red", "green", "blue", "yellow", "orange"]}' --out data/suite

Re-running a command appends new episodes: seeds continue after the earlier runs' (``--seed`` overrides).
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Record, then print a summary table."""
    import json

    from rich.console import Console
    from rich.table import Table

    from fastvla.datasets.recorder import record_suite

    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    summaries = record_suite(
        args.env,
        args.out,
        episodes_per_env=args.episodes,
        cameras=cameras,
        image_size=args.image_size,
        num_envs=args.num_envs,
        keep_failed=args.keep_failed,
        codec=args.codec,
        seed=args.seed,
        control_mode=args.control_mode,
        expert_noise=args.expert_noise,
        max_attempts=args.max_attempts,
        env_kwargs=env_kwargs,
    )
    table = Table(title=f"recorded -> {args.out}")
    table.add_column("env", no_wrap=True)
    table.add_column("saved", no_wrap=True)
    for col in ("attempted", "expert success", "frames", "seconds", "instructions", "seeds"):
        table.add_column(col)
    for env_id, summary in zip(args.env, summaries, strict=True):
        table.add_row(
            env_id,
            f"{summary.episodes_saved} / {summary.requested}",
            str(summary.episodes_attempted),
            f"{summary.success_rate:.1%}",
            str(summary.frames_saved),
            f"{summary.seconds:.1f}",
            str(len(summary.tasks)),
            f"{summary.seed}..",
        )
    console = Console(width=max(Console().width, 132))  # the table stays readable in logs and pipes
    console.print(table)
    short = [(e, s) for e, s in zip(args.env, summaries, strict=True) if not s.complete]
    for env_id, summary in short:
        console.print(
            f"[red]{env_id}: only {summary.episodes_saved} of {summary.requested} episodes succeeded within "
            f"{summary.episodes_attempted} attempts[/red]: lower --expert-noise, pass --keep-failed, or "
            "raise --max-attempts. The saved episodes are in the dataset."
        )
    return 1 if short else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla record``."""
    parser = subparsers.add_parser(
        "record",
        help="record expert demonstrations into a LeRobot dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env",
        required=True,
        nargs="+",
        help="Gymnasium id(s), e.g. fastvla/PickCube-v0 (several: one multi-task dataset)",
    )
    parser.add_argument(
        "--episodes", "--episodes-per-env", type=int, required=True, help="episodes to save per env"
    )
    parser.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    parser.add_argument(
        "--cameras", default="front,wrist", help="comma-separated cameras (default front,wrist)"
    )
    parser.add_argument("--image-size", type=int, default=128, help="rendered resolution (default 128)")
    parser.add_argument("--num-envs", type=int, default=2, help="parallel env processes (default 2)")
    parser.add_argument("--keep-failed", action="store_true", help="also save episodes the expert failed")
    parser.add_argument("--codec", choices=["h264", "av1"], default="h264", help="video codec (default h264)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first resets (default: continue after earlier recordings into --out; 0 if new)",
    )
    parser.add_argument(
        "--env-kwargs",
        default="{}",
        help="JSON object of env constructor arguments, e.g. '{\"num_distractors\": 1}'",
    )
    parser.add_argument("--control-mode", default="ee_delta", choices=["ee_delta", "joint_pos"])
    parser.add_argument("--expert-noise", type=float, default=0.0, help="noise on expert actions")
    parser.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes")
    parser.set_defaults(func=run)
    return parser
