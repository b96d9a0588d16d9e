"""``fastvla dataset info|view|convert|repair``: inspect, visualise and convert LeRobot datasets.

Examples::

    fastvla dataset info data/pick
    fastvla dataset info data/pick --verify     # decode every file; exit 1 on problems
    fastvla dataset repair data/pick            # after a crash: trim leftovers, rewrite totals
    fastvla dataset view data/pick --episode 3 --out-dir views/
    fastvla dataset convert old_v21/ new_v30/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastvla.utils.flags import add_command


def run_info(args: argparse.Namespace) -> int:
    """Print a summary of a dataset (tables or JSON); ``--verify`` checks every file, exit 1 on problems."""
    from fastvla.datasets.lerobot_dataset import resolve_root
    from fastvla.datasets.viewer import summary

    root = resolve_root(args.path)  # a bad dataset is a user error: fastvla.cli prints one line, exit 2
    facts = summary(root)
    if args.verify:
        from fastvla.datasets.verify import format_report, verify

        report = verify(root)
        if args.json:
            print(json.dumps({**facts, "verify": {"ok": report.ok, "problems": report.problems}}, indent=2))
        else:
            _print_info(facts)
            print(format_report(report))
        return 0 if report.ok else 1
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    _print_info(facts)
    print("metadata checked; `--verify` decodes every data and video file")
    return 0


def _print_info(facts: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    overview = Table(title=f"LeRobot dataset {facts['root']}", show_header=False)
    length = facts["episode_length"]
    rows = [
        ("format", f"LeRobot {facts['codebase_version']}"),
        ("robot", str(facts["robot_type"])),
        ("episodes", str(facts["episodes"])),
        ("frames", f"{facts['frames']} ({facts['duration_s']:.1f} s at {facts['fps']} fps)"),
        ("episode length", f"{length['min']} / {length['mean']:.1f} / {length['max']} (min / mean / max)"),
        (
            "tasks",
            f"{facts['tasks']}: "
            + "; ".join(facts["task_examples"])
            + (" ..." if facts["tasks"] > 5 else ""),
        ),
        ("size on disk", f"{facts['size_mb']:.2f} MB"),
    ]
    for name, value in rows:
        overview.add_row(name, value)
    console.print(overview)
    features = Table(title="features")
    for col in ("key", "dtype", "shape", "details"):
        features.add_column(col)
    for key, spec in facts["features"].items():
        details = spec.get("codec") or ", ".join(map(str, spec.get("names") or []))
        features.add_row(key, spec["dtype"], str(tuple(spec["shape"])), details[:60])
    console.print(features)
    if facts["stats"]:
        stats = Table(title="statistics (mean ± std per dimension)")
        stats.add_column("key")
        stats.add_column("values")
        for key, s in facts["stats"].items():
            stats.add_row(key, "  ".join(f"{m:.3g}±{d:.2g}" for m, d in zip(s["mean"], s["std"])))
        console.print(stats)


def run_view(args: argparse.Namespace) -> int:
    """Write ``episode_<N>.mp4`` (cameras + instruction) and ``episode_<N>.png`` (state/action plot)."""
    from fastvla.datasets.lerobot_dataset import LeRobotDataset
    from fastvla.datasets.viewer import episode_plot, episode_video

    dataset = LeRobotDataset(args.path, episodes=[args.episode])
    out_dir = Path(args.out_dir)
    video = episode_video(dataset, out_dir / f"episode_{args.episode}.mp4")
    plot = episode_plot(dataset, out_dir / f"episode_{args.episode}.png")
    print(f"episode {args.episode} ({len(dataset)} frames, task: {dataset.task_of(0)!r})")
    print(f"video: {video}\nplot:  {plot}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert a v2.1 dataset to v3.0."""
    from fastvla.datasets.convert import convert_v21_to_v30

    out = convert_v21_to_v30(args.src, args.dst, overwrite=args.overwrite)
    print(f"wrote LeRobot v3.0 dataset to {out}")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    """Trim what an interrupted recording left behind and rewrite the totals (v3.0 datasets)."""
    from fastvla.datasets.recovery import repair

    actions = repair(args.path)
    print("\n".join(actions) if actions else f"{args.path}: nothing to repair")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla dataset``."""
    parser = add_command(subparsers, "dataset", "inspect, view and convert LeRobot datasets", __doc__, None)
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="summary of a dataset (local folder or hub id)")
    info.add_argument("path", help="dataset root or Hugging Face repo id")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.add_argument(
        "--verify",
        action="store_true",
        help="open every data and video file, check frame counts and timestamps; exit 1 on problems",
    )
    info.set_defaults(func=run_info)
    view = sub.add_parser("view", help="mp4 of an episode's cameras + plot of its state/action")
    view.add_argument("path", help="dataset root or Hugging Face repo id")
    view.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
    view.add_argument("--out-dir", default=".", help="folder for episode_<N>.mp4/.png (default: current)")
    view.set_defaults(func=run_view)
    convert = sub.add_parser("convert", help="convert a LeRobot v2.1 dataset to v3.0")
    convert.add_argument("src", help="v2.1 dataset root")
    convert.add_argument("dst", help="output folder for the v3.0 dataset")
    convert.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    convert.set_defaults(func=run_convert)
    repair = sub.add_parser("repair", help="after a crash: trim uncommitted rows/frames, rewrite totals")
    repair.add_argument("path", help="local v3.0 dataset root")
    repair.set_defaults(func=run_repair)
    return parser
