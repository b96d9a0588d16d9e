"""``fastvla eval``: evaluate a policy in closed loop and write eval_info.json, videos and a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  fastvla eval --policy scripted --env fastvla/PickCube-v0 --episodes 20 --out outputs/eval/scripted
  fastvla eval --policy outputs/train/tiny --env fastvla/ReachCube-v0 --episodes 100 --batch-size 8 \\
      --seed 0 --out outputs/eval/tiny --load-in-4bit
  fastvla eval --policy ws://localhost:8765 --env fastvla/PickCube-v0 --episodes 50 --out outputs/eval/remote
"""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"not valid JSON ({err}): {text!r}; e.g. '{{\"image_size\": 96}}'"
        raise argparse.ArgumentTypeError(msg) from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"image_size\": 96}}', got {text!r}"
        )
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fastvla eval`` on the top-level sub-parsers."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a policy in simulation (success rate, videos, report)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        required=True,
        help="checkpoint path or Hub id, 'scripted' (the env's expert), 'random', or ws://host:port",
    )
    p.add_argument(
        "--env",
        required=True,
        nargs="+",
        help="Gymnasium env id(s), e.g. fastvla/PickCube-v0; several give a per-env breakdown",
    )
    p.add_argument("--episodes", type=int, default=50, help="episodes per env (default 50)")
    p.add_argument("--batch-size", type=int, default=1, help="envs stepped in parallel (default 1)")
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed SEED + i (default 0)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (eval_info.json, report.md, videos/)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="step cap per episode (default: env's limit)")
    p.add_argument("--max-videos", type=int, default=10, help="videos written per env (default 10; 0: none)")
    p.add_argument(
        "--env-kwargs",
        type=_json_object,
        default=None,
        help="JSON keyword arguments for gym.make, e.g. '{\"image_size\": 96}'",
    )
    p.add_argument("--load-in-4bit", action="store_true", help="load a FastVLA checkpoint with NF4 weights")
    p.add_argument(
        "--obs-map",
        type=_json_object,
        default=None,
        help="observation map of a checkpoint for envs with other keys, as JSON for ObservationMap, e.g. "
        '\'{"cameras": {"front": "cam_high"}, "state": "qpos", "instruction": "pick up the cube"}\'',
    )
    p.add_argument(
        "--n-action-steps", type=int, default=None, help="actions executed per predicted chunk (checkpoint)"
    )
    p.add_argument("--device", default=None, help="torch device of a checkpoint (default: cuda if available)")
    p.add_argument(
        "--camera-keys",
        nargs="+",
        default=None,
        help="observation paths of the images shown in videos (default: every RGB image, e.g. pixels/front)",
    )
    p.add_argument("--task", default=None, help="instruction to use when the env gives none in info['task']")
    p.add_argument(
        "--vectorization",
        choices=("auto", "async", "sync"),
        default="auto",
        help="vector env kind; auto = async workers (forkserver) when batch size > 1, else sync",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by the parsed arguments and print the summary table."""
    from fastvla.eval import evaluate, load_policy
    from fastvla.eval.report import print_summary

    for flag, value in (("--episodes", args.episodes), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} {value} must be >= 1")  # fastvla.cli prints it as a user error
    kwargs: dict[str, Any] = {}
    if args.obs_map is not None:
        from fastvla.policies import ObservationMap

        kwargs["obs_map"] = ObservationMap(**args.obs_map)
    if args.n_action_steps is not None:
        kwargs["n_action_steps"] = args.n_action_steps
    policy = load_policy(args.policy, load_in_4bit=args.load_in_4bit, device=args.device, **kwargs)
    result = evaluate(
        policy,
        args.env if len(args.env) > 1 else args.env[0],
        n_episodes=args.episodes,
        batch_size=args.batch_size,
        seed=args.seed,
        max_steps=args.max_steps,
        max_videos=args.max_videos,
        out_dir=args.out,
        env_kwargs=args.env_kwargs,
        camera_keys=args.camera_keys,
        task=args.task,
        vectorization=args.vectorization,
        progress=not args.no_progress,
        policy_name=args.policy,
        metadata={
            "load_in_4bit": args.load_in_4bit,
            "device": args.device,
            "obs_map": args.obs_map,
            "n_action_steps": args.n_action_steps,
            "command": "fastvla eval",
        },
    )
    print_summary(result.info)
    print(f"results: {args.out / 'eval_info.json'}  report: {args.out / 'report.md'}")
    return 0
