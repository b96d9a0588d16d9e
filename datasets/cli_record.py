"""``fastvla record``: record scripted-expert demonstrations into a LeRobot v3.0 dataset.

Example::

    fastvla record --env fastvla/PickCube-v0 --episodes 200 --cameras front,wrist --out data/pick
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Record, then print a summary table."""
    from rich.console import Console
    from rich.table import Table

    from fastvla.datasets.recorder import record

    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    summary = record(
        args.env,
        args.out,
        episodes=args.episodes,
        cameras=cameras,
        image_size=args.image_size,
        num_envs=args.num_envs,
        keep_failed=args.keep_failed,
        codec=args.codec,
        seed=args.seed,
        control_mode=args.control_mode,
        expert_noise=args.expert_noise,
        max_attempts=args.max_attempts,
    )
    table = Table(title=f"recorded {args.env} -> {summary.out}", show_header=False)
    table.add_row("episodes saved", f"{summary.episodes_saved} / {summary.requested}")
    table.add_row("episodes attempted", str(summary.episodes_attempted))
    table.add_row("expert success rate", f"{summary.success_rate:.1%}")
    table.add_row("frames saved", str(summary.frames_saved))
    table.add_row(
        "time", f"{summary.seconds:.1f} s ({summary.frames_saved / max(summary.seconds, 1e-9):.1f} frames/s)"
    )
    table.add_row("distinct instructions", str(len(summary.tasks)))
    console = Console()
    console.print(table)
    if not summary.complete:
        console.print(
            f"[red]only {summary.episodes_saved} of {summary.requested} episodes succeeded within "
            f"{summary.episodes_attempted} attempts[/red]: lower --expert-noise, pass --keep-failed, or "
            "raise --max-attempts. The saved episodes are in the dataset."
        )
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla record``."""
    parser = subparsers.add_parser(
        "record",
        help="record expert demonstrations into a LeRobot dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="Gymnasium id, e.g. fastvla/PickCube-v0")
    parser.add_argument("--episodes", type=int, required=True, help="episodes to save")
    parser.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    parser.add_argument(
        "--cameras", default="front,wrist", help="comma-separated cameras (default front,wrist)"
    )
    parser.add_argument("--image-size", type=int, default=128, help="rendered resolution (default 128)")
    parser.add_argument("--num-envs", type=int, default=2, help="parallel env processes (default 2)")
    parser.add_argument("--keep-failed", action="store_true", help="also save episodes the expert failed")
    parser.add_argument("--codec", choices=["h264", "av1"], default="h264", help="video codec (default h264)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first resets (default 0)")
    parser.add_argument("--control-mode", default="ee_delta", choices=["ee_delta", "joint_pos"])
    parser.add_argument("--expert-noise", type=float, default=0.0, help="noise on expert actions")
    parser.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes")
    parser.set_defaults(func=run)
    return parser
