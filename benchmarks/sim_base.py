"""Reproduce the shipped ``sim-base`` checkpoint: record the suite, pretrain on one GPU, score it.

Every stage is a plain ``fastvla`` command (printed, and appended to ``<work>/commands.txt``), so the
model card can quote exactly what ran:

1. ``record``: ``fastvla record`` of all five tasks into one LeRobot dataset, ``--episodes`` each, with
   instructions that never name the held-out colour (``fastvla.envs.TRAIN_COLORS``);
2. ``train``: a short calibration run measures updates/s on this machine, then ``fastvla train
   --model.preset sim-base`` runs as many updates as fit in ``--minutes`` (a cosine schedule needs the
   step count up front);
3. ``eval``: ``fastvla bench suite`` on held-out seeds (``benchmarks/suite.py``).

Example (one H100 with 16 CPU cores; ~4 min recording, 13 min training, ~5 min evaluation)::

    python benchmarks/sim_base.py all --episodes 1000 --minutes 13 --work outputs/sim_base
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from fastvla.envs.colors import TRAIN_COLORS

import _common

ENV_IDS = (
    "fastvla/ReachCube-v0",
    "fastvla/PickCube-v0",
    "fastvla/PlaceCube-v0",
    "fastvla/PushCube-v0",
    "fastvla/StackCube-v0",
)
FASTVLA = _common.FASTVLA


def _run(cmd: list[str], work: Path) -> None:
    """Run ``cmd`` and append it to ``<work>/commands.txt`` (the model card quotes that file)."""

    def append(text: str) -> None:
        with open(work / "commands.txt", "a") as f:
            f.write(text + "\n")

    _common.run_fastvla(cmd, append)


def record(args: argparse.Namespace) -> None:
    """Record the multi-task dataset (skipped when it already holds the episodes)."""
    data = _data(args)
    info = data / "meta" / "info.json"
    if info.is_file() and json.loads(info.read_text())["total_episodes"] >= args.episodes * len(ENV_IDS):
        print(f"dataset {data} already recorded")
        return
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    _run(
        [
            *FASTVLA, "record", "--env", *ENV_IDS, "--episodes-per-env", str(args.episodes),
            "--image-size", "64", "--cameras", "front,wrist", "--num-envs", str(workers),
            "--expert-noise", "0.1", "--seed", "0", "--out", str(data),
            "--env-kwargs", json.dumps({"instruction_colors": list(TRAIN_COLORS)}),
        ],
        Path(args.work),
    )  # fmt: skip


def _data(args: argparse.Namespace) -> Path:
    """The dataset folder: ``--data``, else ``<work>/data``."""
    return Path(args.data) if args.data else Path(args.work) / "data"


def _train_args(args: argparse.Namespace, steps: int, out: Path) -> list[str]:
    work = Path(args.work)
    return [
        *FASTVLA, "train", "--data.root", str(_data(args)), "--data.cameras", "front", "wrist",
        "--data.augment", "--data.cache-dir", str(work / "frame_cache"), "--data.val-fraction", "0.02",
        "--model.preset", "sim-base", "--batch-size", str(args.batch_size), "--steps", str(steps),
        "--optim.lr", str(args.lr), "--optim.head-lr", str(args.lr),
        "--optim.warmup-steps", str(min(500, steps // 10)), "--save-every", str(max(steps // 4, 1)),
        "--val-every", str(max(steps // 8, 1)), "--log-every", "100", "--output-dir", str(out),
        "--no-progress", "--overwrite",
        *(["--model.preset-overrides", args.preset_overrides] if args.preset_overrides else []),
    ]  # fmt: skip


def train(args: argparse.Namespace) -> None:
    """Calibrate updates/s, then pretrain for ``--minutes``."""
    work = Path(args.work)
    calib = work / "calibration"
    steps = args.steps
    if not steps:
        start = time.perf_counter()
        _run(_train_args(args, args.calibration_steps, calib), work)
        # The second half of the calibration run is steady state (graph capture and caching are in the
        # first half).
        rate = _steady_rate(calib, args.batch_size)
        steps = int(rate * 60 * args.minutes)
        print(f"calibration: {rate:.1f} updates/s ({time.perf_counter() - start:.0f} s) -> {steps} steps")
    _run(_train_args(args, steps, work / "train"), work)


def _steady_rate(run_dir: Path, batch_size: int) -> float:
    """Updates/s over the second half of a run's logged windows (``logs/metrics.jsonl``, one process)."""
    metrics = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    rows = [m for m in metrics if "train/samples_per_s" in m]
    late = rows[len(rows) // 2 :]
    return sum(m["train/samples_per_s"] for m in late) / len(late) / batch_size


def evaluate(args: argparse.Namespace) -> None:
    """Score the exported policy on the suite (fp32, held-out colour, NF4 paired)."""
    work = Path(args.work)
    _run(
        [
            *FASTVLA, "bench", "suite", "--policy", str(work / "train" / "policy"),
            "--episodes", str(args.eval_episodes), "--batch-size", str(args.eval_batch_size), "--nf4",
            "--quiet", "--work-dir", str(work / "suite"), "--out", str(work / "suite.json"),
        ],
        work,
    )  # fmt: skip


def card(args: argparse.Namespace) -> None:
    """Copy the exported policy to ``--ship`` and write its model card from the run's own files."""
    import shutil

    from fastvla.utils.io import atomic_write_text

    work, ship = Path(args.work), Path(args.ship)
    report = json.loads((work / "suite.json").read_text())
    policy = work / "train" / "policy"
    if ship.exists():
        shutil.rmtree(ship)
    shutil.copytree(policy, ship)
    metrics = [json.loads(x) for x in (work / "train" / "logs" / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if "train/loss" in m][-1]
    info = json.loads((_data(args) / "meta" / "info.json").read_text())
    from suite import format_table  # beside this script, on sys.path as _common is

    lines = [
        "# sim-base: FastVLA's pretrained base for the built-in tabletop suite",
        "",
        f"The `sim-base` preset (ResNet tower with FiLM + spatial keypoints, {_fusion_words(policy)}, "
        "4-layer 256-wide Llama decoder, residual MLP action head; 8-step chunks of 7-D end-effector deltas "
        "+ gripper; `front` and `wrist` cameras at 64x64) trained from random weights on scripted "
        "demonstrations of all five tasks. Load it with "
        "`FastVLAPolicy.from_pretrained(fastvla.checkpoints.path('sim-base'))` or "
        "`FastVLAModel.from_pretrained(...)`, in 4-bit with `load_in_4bit=True`.",
        "",
        "## Data",
        f"{info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']} Hz, balanced "
        "over the five tasks (expert noise 0.1, seeds from 0). Instructions name only "
        f"{', '.join(report['train_colors'])}: **{report['held_out_color']} is held out** (it appears only "
        "as a distractor) so that fine-tuning has something the base has never been asked to do.",
        "",
        "## Training",
        f"{last['step']} updates at batch {args.batch_size} (final training loss {last['train/loss']:.4f}, "
        f"{last['train/samples_per_s']:.0f} samples/s), on {report['machine']}.",
        "",
        *([args.note, ""] if args.note else []),
        "## Reproduce",
        "```bash",
        *(work / "commands.txt").read_text().strip().splitlines(),
        "```",
        "(`python benchmarks/sim_base.py all` runs these; `benchmarks/sim_base_device.sh` on the device "
        "tool.)",
        "",
        "## Success (closed loop, seeds never recorded)",
        format_table(report),
        "",
        "Written by `python benchmarks/sim_base.py card` from `benchmarks/results/sim_base_suite.json`.",
    ]
    atomic_write_text(ship / "README.md", "\n".join(lines) + "\n")
    shutil.copy(work / "suite.json", Path(__file__).parent / "results" / "sim_base_suite.json")
    print(f"shipped {ship} ({sum(f.stat().st_size for f in ship.iterdir()) / 2**20:.1f} MiB)")


def _fusion_words(policy: Path) -> str:
    """How the exported model fuses its cameras, in the card's words (from its ``config.json``)."""
    fusion = json.loads((policy / "config.json").read_text())["fusion"]
    if fusion["mode"] == "prefix":
        return "prefix fusion (every projected visual token is a decoder token)"
    return f"latent cross-attention fusion ({fusion['num_queries']} queries, {fusion['num_layers']} layers)"


def main() -> None:
    """Parse arguments and run the stage(s)."""
    parser = _common.parser(__doc__)
    parser.add_argument("stage", choices=["record", "train", "eval", "all", "card"])
    parser.add_argument(
        "--ship", default="fastvla/checkpoints/sim-base", help="where `card` copies the policy"
    )
    parser.add_argument("--work", default="outputs/sim_base", help="dataset, runs and results")
    parser.add_argument("--note", default="", help="`card`: how this run differs from the plan")
    parser.add_argument("--data", default="", help="dataset folder (default <work>/data)")
    parser.add_argument("--episodes", type=int, default=1000, help="demonstrations per task")
    parser.add_argument("--minutes", type=float, default=13.0, help="training budget after calibration")
    parser.add_argument("--steps", type=int, default=0, help="train this many updates (skips calibration)")
    parser.add_argument("--calibration-steps", type=int, default=600, help="updates of the speed probe")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--preset-overrides",
        default="",
        help='`train`: JSON for --model.preset-overrides, e.g. \'{"fusion": {"keypoint_readout": "token"}}\'',
    )
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    stages = ("record", "train", "eval") if args.stage == "all" else (args.stage,)
    for stage in stages:
        {"record": record, "train": train, "eval": evaluate, "card": card}[stage](args)


if __name__ == "__main__":
    main()
