"""Success of one policy on the whole built-in suite, its held-out variation, and NF4 vs fp32 on paired seeds.

For each task of ``fastvla.envs.ENV_IDS`` the policy runs ``--episodes`` closed-loop episodes on seeds it
never trained on (Wilson 95% intervals), with instructions naming the colours of the base's training data
(``TRAIN_COLORS``). The held-out variation — instructions naming ``HELD_OUT_COLOR``, which the ``sim-base``
pretraining never used — is scored on the single-cube tasks. With ``--nf4`` the same checkpoint is loaded
again with its vision tower and decoder in 4-bit NF4 and replays exactly the same seeds: the paired
per-episode difference (NF4 - fp32) gets a 95% interval, over all tasks and over the tasks where fp32 is
below 95% (where a drop could show).

Example (the shipped base, on a GPU machine)::

    fastvla bench suite --policy fastvla/checkpoints/sim-base --episodes 100 --batch-size 16 --nf4

Prints a table and writes JSON (default ``benchmarks/results/suite.json``); videos, ``eval_info.json``,
reports and one ``summary.gif`` per task go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvla.envs.colors import HELD_OUT_COLOR, TRAIN_COLORS
from fastvla.eval.report import git_revision

import _common

TASKS = (
    "fastvla/ReachCube-v0",
    "fastvla/PickCube-v0",
    "fastvla/PushCube-v0",
    "fastvla/PlaceCube-v0",
    "fastvla/StackCube-v0",
)
#: Issue 13's targets for the base (success share per task).
BASE_TARGETS = {
    "fastvla/ReachCube-v0": 0.95,
    "fastvla/PickCube-v0": 0.80,
    "fastvla/PushCube-v0": 0.70,
    "fastvla/PlaceCube-v0": 0.60,
    "fastvla/StackCube-v0": 0.40,
}
SINGLE_CUBE_TASKS = TASKS[:4]


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Mean of ``b - a`` over paired binary outcomes with a normal-approximation 95% interval.

    Args:
        a: baseline outcomes (0/1) per episode.
        b: outcomes of the other policy on the same seeds.

    Returns:
        ``{"n", "diff_pp", "ci95_pp", "disagree"}`` (percentage points).
    """
    d = b.astype(np.float64) - a.astype(np.float64)
    n = len(d)
    if n == 0:
        return {"n": 0, "diff_pp": None, "ci95_pp": None, "disagree": 0}
    half = 1.96 * (d.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0)
    return {
        "n": n,
        "diff_pp": 100 * d.mean(),
        "ci95_pp": [100 * (d.mean() - half), 100 * (d.mean() + half)],
        "disagree": int((d != 0).sum()),
    }


def _named(task: str, names: list[str]) -> bool:
    """Whether ``task`` (``fastvla/PickCube-v0``) is among ``names`` (``PickCube``); empty = all."""
    return not names or task.split("/")[-1].removesuffix("-v0") in names


def _row(result: Any, seed: int) -> dict[str, Any]:
    low, high = result.success_ci95
    return {
        "success": result.success_rate,
        "ci95": [low, high],
        "episodes": result.n_episodes,
        "successes": result.n_success,
        "seeds": [seed, seed + result.n_episodes - 1],
        "mean_length": result.mean_length,
        "eval_s": result.eval_s,
        "outcomes": [int(e.success) for e in result.episodes],
    }


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (+ {platform.processor() or platform.machine()} CPU)"
    return f"{platform.node()} ({platform.processor() or platform.machine()}, CPU)"


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate, print the table, and return the report (also written to ``args.out``)."""
    from fastvla.envs.rendering import preload_triton
    from fastvla.eval import evaluate, load_policy

    preload_triton()  # before any GL context exists in this process
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(args.work_dir)
    tasks = [t for t in TASKS if _named(t, args.tasks)]

    def run(policy: Any, label: str, task: str, colors: tuple[str, ...], seed: int, videos: int) -> Any:
        cfg = policy.model.config
        env_kwargs = {
            "cameras": tuple(cfg.cameras),
            "image_size": int(cfg.image_size[0]),
            "instruction_colors": colors,
        }
        name = task.split("/")[-1]
        return evaluate(
            policy,
            task,
            n_episodes=args.episodes,
            batch_size=args.batch_size,
            seed=seed,
            env_kwargs=env_kwargs,
            out_dir=work / label / name,
            max_videos=videos,
            progress=not args.quiet,
            policy_name=f"{Path(args.policy).name} ({label})",
        )

    start = time.perf_counter()
    fp32 = load_policy(args.policy, device=device, n_action_steps=args.n_action_steps)
    report: dict[str, Any] = {
        "machine": _machine(device),
        "policy": args.policy,
        "git_revision": (git_revision() or {}).get("commit", "unknown"),
        "episodes_per_task": args.episodes,
        "n_action_steps": args.n_action_steps,
        "train_colors": list(TRAIN_COLORS),
        "held_out_color": HELD_OUT_COLOR,
        "base": {},
        "held_out": {},
    }

    def save_partial() -> None:  # a long run killed half-way still leaves what it measured
        report["seconds"] = time.perf_counter() - start
        _common.write_json(args.out, {**report, "complete": False}, indent=1)

    for task in tasks:
        result = run(fp32, "fp32", task, TRAIN_COLORS, args.seed, args.videos)
        report["base"][task] = _row(result, args.seed)
        report["base"][task]["target"] = BASE_TARGETS[task]
        save_partial()
    if args.held_out:
        held = [t for t in tasks if t in SINGLE_CUBE_TASKS and _named(t, args.held_out_tasks)]
        for task in held:
            result = run(fp32, "held_out", task, (HELD_OUT_COLOR,), args.seed, min(args.videos, 2))
            report["held_out"][task] = _row(result, args.seed)
            save_partial()
    if args.nf4:
        nf4 = load_policy(args.policy, load_in_4bit=True, device=device, n_action_steps=args.n_action_steps)
        report["nf4"] = {}
        for task in [t for t in tasks if _named(t, args.nf4_tasks)]:
            result = run(nf4, "nf4", task, TRAIN_COLORS, args.seed, 0)
            report["nf4"][task] = _row(result, args.seed)
            save_partial()
        both = {
            t: (np.array(report["base"][t]["outcomes"]), np.array(report["nf4"][t]["outcomes"]))
            for t in report["nf4"]
        }
        unsaturated = [t for t in report["nf4"] if report["base"][t]["success"] < 0.95]
        report["nf4_vs_fp32"] = {
            "all_tasks": paired_difference(
                np.concatenate([a for a, _ in both.values()]), np.concatenate([b for _, b in both.values()])
            ),
            "tasks_below_95pct": unsaturated,
            "below_95pct": paired_difference(
                np.concatenate([both[t][0] for t in unsaturated] or [np.zeros(0)]),
                np.concatenate([both[t][1] for t in unsaturated] or [np.zeros(0)]),
            ),
        }
    report["seconds"] = time.perf_counter() - start
    _common.write_json(args.out, {**report, "complete": True}, indent=1)
    print(format_table(report))
    print(f"wrote {args.out}; videos and reports in {work}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of a suite report (the README's table is this output)."""
    lines = [
        f"{report['policy']} on {report['machine']}, {report['episodes_per_task']} episodes per task",
        "",
        "| task | instructions | success % | 95% CI | target | NF4 success % |",
        "|---|---|---|---|---|---|",
    ]

    def pct(row: dict[str, Any]) -> tuple[str, str]:
        low, high = row["ci95"]
        return f"{100 * row['success']:.1f}", f"[{100 * low:.1f}, {100 * high:.1f}]"

    for task, row in report["base"].items():
        s, ci = pct(row)
        nf4 = report.get("nf4", {}).get(task)
        target = f">= {100 * row['target']:.0f}% ({'met' if row['success'] >= row['target'] else 'missed'})"
        nf4_s = pct(nf4)[0] if nf4 else "-"
        lines.append(f"| {task} | seen colours | {s} | {ci} | {target} | {nf4_s} |")
    for task, row in report["held_out"].items():
        s, ci = pct(row)
        lines.append(f"| {task} | held-out '{report['held_out_color']}' | {s} | {ci} | - | - |")
    paired = report.get("nf4_vs_fp32")
    if paired:
        for key, label in (("all_tasks", "all tasks"), ("below_95pct", "tasks where fp32 < 95%")):
            p = paired[key]
            if p["n"]:
                lo, hi = p["ci95_pp"]
                lines.append(
                    f"\nNF4 - fp32, {label}: {p['diff_pp']:+.1f} pp [{lo:+.1f}, {hi:+.1f}] over {p['n']} "
                    f"paired episodes ({p['disagree']} disagree)"
                )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments and run."""
    parser = _common.parser(__doc__)
    parser.add_argument("--policy", default="fastvla/checkpoints/sim-base", help="policy folder")
    parser.add_argument("--tasks", nargs="*", default=[], help="task names (ReachCube ...); default all")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task and variation")
    parser.add_argument("--seed", type=int, default=300_000, help="first evaluation seed (never recorded)")
    parser.add_argument("--batch-size", type=int, default=16, help="parallel envs")
    parser.add_argument("--n-action-steps", type=int, default=1, help="actions executed per chunk")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--videos", type=int, default=6, help="videos per task (fp32)")
    parser.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--nf4", action="store_true", help="also NF4 on the same seeds (paired)")
    parser.add_argument("--nf4-tasks", nargs="*", default=[], help="NF4 on these tasks only (default all)")
    parser.add_argument(
        "--held-out-tasks", nargs="*", default=[], help="held-out colour on these tasks only (default all)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--work-dir", default="outputs/suite")
    parser.add_argument("--out", default="benchmarks/results/suite.json")
    run_suite(parser.parse_args())


if __name__ == "__main__":
    main()
