"""Third-party env results: Meta-World MT1 (scripted vs fine-tuned FastVLA), gym-aloha and Fetch baselines.

For each Meta-World task (default: reach, push, pick-place, drawer-open, button-press-topdown):

1. Meta-World's scripted policy (``metaworld.policies``) on ``--episodes`` evaluation seeds;
2. ``--demos`` scripted demonstrations recorded with FastVLA's recorder (seeds 0.., a little action noise),
   the ``tiny`` preset trained from scratch on them for ``--steps`` updates, and the fine-tuned policy
   evaluated on the same evaluation seeds (``--eval-seed`` ..), which the recorder never used.

Then the scripted/heuristic baselines of gym-aloha ``AlohaTransferCube-v0`` (gym-aloha's end-effector
scripted policy, ACT's ``PickAndTransferPolicy``) and a Fetch task (:class:`FetchHeuristic`). Every
success rate comes with a Wilson 95% interval.

Runs in the third-party venv (``make venv-thirdparty``); single-threaded torch so that it shares a small
machine::

    OMP_NUM_THREADS=1 nice -n 10 .venv-thirdparty/bin/python benchmarks/thirdparty.py

Each finished part is stored under ``--work-dir`` (datasets, runs, ``parts/*.json``) and reused by a
re-run with the same settings (``--fresh`` redoes it), so a long run can be resumed or extended
(``--tasks reach-v3``). Writes ``benchmarks/results/thirdparty.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

import _aloha_scripted
import _common

os.environ.setdefault("MUJOCO_GL", "egl")

MW_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "drawer-open-v3", "button-press-topdown-v3")
CAMERAS = ("corner2", "topview")
ENV_ID = "fastvla.envs.thirdparty:fastvla/MetaWorld-v0"


def _wilson(k: int, n: int) -> list[float]:
    from fastvla.eval.metrics import wilson_interval

    return list(wilson_interval(k, n))


def _row(result: Any, seconds: float) -> dict[str, Any]:
    """Success, Wilson interval, lengths and the per-seed outcomes of an :class:`EvalResult`."""
    k, n = result.n_success, result.n_episodes
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci95": _wilson(k, n),
        "avg_length": result.mean_length,
        "seeds": [e.seed for e in result.episodes],
        "per_episode_success": [bool(e.success) for e in result.episodes],
        "seconds": round(seconds, 1),
    }


class Parts:
    """JSON results of finished parts under ``work/parts``, keyed by name and the settings they used."""

    def __init__(self, work: Path, fresh: bool) -> None:
        self.dir = work / "parts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fresh = fresh

    def get(self, name: str, settings: dict[str, Any], compute: Any) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        path = self.dir / f"{name}-{digest}.json"
        if path.is_file() and not self.fresh:
            print(f"  reusing {path}")
            return json.loads(path.read_text())
        start = time.perf_counter()
        out = {"settings": settings, **compute()}
        out["wall_s"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(out, indent=1))
        return out


def _mw_factory(task: str, args: argparse.Namespace) -> Any:
    from fastvla.envs.thirdparty import make_metaworld

    return functools.partial(
        make_metaworld,
        task,
        cameras=CAMERAS,
        image_size=args.image_size,
        max_episode_steps=args.eval_max_steps,
        terminate_on_success=True,  # success is "ever succeeded"; ending there saves rendering time
    )


def _evaluate(policy: Any, task: str, args: argparse.Namespace, videos: Path | None) -> dict[str, Any]:
    from fastvla.eval import evaluate

    start = time.perf_counter()
    result = evaluate(
        policy,
        {task: _mw_factory(task, args)},
        n_episodes=args.episodes,
        seed=args.eval_seed,
        vectorization="sync" if args.eval_envs == 1 else "async",
        batch_size=args.eval_envs,
        out_dir=videos,
        max_videos=2 if videos else 0,
        progress=False,
    )
    return _row(result, time.perf_counter() - start)


def _mw_state_only(task: str, max_steps: int) -> Any:
    """The same seeded MT1 episodes as :func:`make_metaworld`, without rendering (the scripted policy reads
    the state vector): rendering two cameras is ~95% of a step's time on a CPU."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers Meta-World/MT1)

    from fastvla.envs.thirdparty import LanguageInstruction, MetaWorldSeeding, _metaworld_instruction

    kwargs = {"max_episode_steps": max_steps, "terminate_on_success": True, "disable_env_checker": True}
    env = gym.make("Meta-World/MT1", env_name=task, seed=0, **kwargs)
    env = MetaWorldSeeding(env, task)
    return LanguageInstruction(env, _metaworld_instruction(task), success_key="success")


def metaworld_scripted(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Meta-World's scripted policy on the evaluation seeds."""
    env_fn = functools.partial(_mw_state_only, task, args.eval_max_steps)
    return {"scripted": _baseline(env_fn, task, args.episodes, args.eval_seed, None)}


def metaworld_finetuned(task: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Record demos, train the tiny preset from scratch, evaluate on the evaluation seeds."""
    import torch

    from fastvla.envs.thirdparty import metaworld_observation_map
    from fastvla.policies import FastVLAPolicy
    from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig, train

    data, run = work / "data" / task, work / "runs" / task
    demos = _record_demos(task, args, data)
    cfg = TrainConfig(
        data=DataConfig(root=str(data), cameras=CAMERAS, image_size=args.image_size, val_fraction=0.0),
        model=ModelConfig(preset="tiny"),
        optim=OptimConfig(lr=args.lr, head_lr=args.lr, warmup_steps=min(100, args.steps // 10)),
        output_dir=str(run),
        steps=args.steps,
        batch_size=args.batch_size,
        device="cpu",
        seed=0,
        save_every=0,
        val_every=0,
        tensorboard=False,
        progress=False,
        log_every=max(1, args.steps // 10),
    )
    stamp = run / "benchmark_train.json"  # a policy trained with these settings is reused (resumable runs)
    if stamp.is_file() and json.loads(stamp.read_text())["config"] == cfg.to_dict():
        print(f"  reusing the policy trained in {run}")
        train_s = json.loads(stamp.read_text())["train_s"]
    else:
        shutil.rmtree(run, ignore_errors=True)
        start = time.perf_counter()
        torch.manual_seed(0)
        train(cfg)
        train_s = time.perf_counter() - start
        stamp.write_text(json.dumps({"config": cfg.to_dict(), "train_s": train_s}))
    obs_map = metaworld_observation_map(task, cameras=CAMERAS)
    policy = FastVLAPolicy.from_pretrained(
        run / "policy", device="cpu", obs_map=obs_map, n_action_steps=args.n_action_steps
    )
    row = _evaluate(policy, task, args, work / "evals" / task)
    return {
        "finetuned": row,
        "demos": demos,
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            **_final_loss(run),
            "train_s": round(train_s, 1),
        },
    }


def _record_demos(task: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Record the demonstrations into ``data``, or reuse the ones recorded there with the same settings."""
    from fastvla.datasets.recorder import record

    settings = {
        "task": task,
        "episodes": args.demos,
        "image_size": args.image_size,
        "expert_noise": args.expert_noise,
        "max_steps": args.max_steps,
        "cameras": list(CAMERAS),
    }
    stamp = data / "meta" / "benchmark_recording.json"
    if stamp.is_file() and json.loads(stamp.read_text())["settings"] == settings:
        print(f"  reusing the demonstrations in {data}")
        return json.loads(stamp.read_text())["summary"]
    shutil.rmtree(data, ignore_errors=True)
    start = time.perf_counter()
    summary = record(
        ENV_ID,
        data,
        episodes=args.demos,
        cameras=CAMERAS,
        image_size=args.image_size,
        num_envs=args.num_envs,
        seed=0,
        expert_noise=args.expert_noise,
        env_kwargs={"task": task, "terminate_on_success": True, "max_episode_steps": args.max_steps},
        progress=False,
    )
    out = {
        "episodes": summary.episodes_saved,
        "frames": summary.frames_saved,
        "expert_success_rate": summary.success_rate,
        "seeds_from": 0,
        "record_s": round(time.perf_counter() - start, 1),
    }
    stamp.write_text(json.dumps({"settings": settings, "summary": out}))
    return out


def _final_loss(run: Path) -> dict[str, float | None]:
    """Last logged training loss and samples/s from ``<run>/logs/metrics.jsonl``."""
    path = run / "logs" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if "train/loss" in r]
    last = rows[-1] if rows else {}
    return {"final_loss": last.get("train/loss"), "samples_per_s": last.get("train/samples_per_s")}


def _baseline(env_fn: Any, name: str, episodes: int, seed: int, max_steps: int | None) -> dict[str, Any]:
    from fastvla.eval import evaluate

    start = time.perf_counter()
    result = evaluate(
        "scripted",
        {name: env_fn},
        n_episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        batch_size=1,
        vectorization="sync",
        progress=False,
    )
    return _row(result, time.perf_counter() - start)


def aloha_scripted(args: argparse.Namespace) -> dict[str, Any]:
    """gym-aloha transfer-cube with ACT's scripted policy (see ``benchmarks/_aloha_scripted.py``)."""
    start = time.perf_counter()
    seeds = range(args.eval_seed, args.eval_seed + args.aloha_episodes)
    episodes = [_aloha_scripted.run_episode(seed) for seed in seeds]
    k, n = sum(e["success"] for e in episodes), len(episodes)
    row = {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci95": _wilson(k, n),
        "avg_length": float(np.mean([e["length"] for e in episodes])),
        "seeds": list(seeds),
        "per_episode_success": [e["success"] for e in episodes],
        "per_episode_max_reward": [e["max_reward"] for e in episodes],
        "seconds": round(time.perf_counter() - start, 1),
    }
    return {"scripted": row, "max_steps": _aloha_scripted.MAX_STEPS, "policy": "ACT PickAndTransferPolicy"}


def fetch_heuristic(args: argparse.Namespace) -> dict[str, Any]:
    """A Fetch task with :class:`fastvla.envs.thirdparty.FetchHeuristic`."""
    from fastvla.envs.thirdparty import make_fetch

    env_fn = functools.partial(make_fetch, args.fetch_task, image_size=16)
    return {"heuristic": _baseline(env_fn, args.fetch_task, args.episodes, args.eval_seed, None)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "mujoco", "gymnasium", "metaworld", "gym-aloha", "gymnasium-robotics", "fastvla"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _pct(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    low, high = row["success_ci95"]
    share = f"{row['successes']}/{row['episodes']}"
    return f"{100 * row['success_rate']:.0f}% ({share}, CI {100 * low:.0f}-{100 * high:.0f})"


def format_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per env/task, scripted and fine-tuned success with 95% intervals."""
    lines = [
        "| env | task | scripted / heuristic | fine-tuned FastVLA (tiny, from scratch) |",
        "|---|---|---|---|",
    ]
    for task, row in report["metaworld"]["tasks"].items():
        scripted, tuned = _pct(row.get("scripted")), _pct(row.get("finetuned"))
        lines.append(f"| Meta-World MT1 | {task} | {scripted} | {tuned} |")
    if report.get("aloha"):
        lines.append(f"| gym-aloha | AlohaTransferCube-v0 | {_pct(report['aloha'].get('scripted'))} | - |")
    if report.get("fetch"):
        lines.append(f"| Fetch | {report['fetch']['task']} | {_pct(report['fetch'].get('heuristic'))} | - |")
    return "\n".join(lines)


def merge_reports(paths: list[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """One report from several runs' JSONs (later files fill or replace parts per task), and for each
    Meta-World task the file its fine-tuned row came from (``format_table`` of the merge renders the
    README's table; each part stays in the JSON its run wrote)."""
    merged: dict[str, Any] = {"metaworld": {"tasks": {}}}
    sources: dict[str, str] = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        for task, row in report.get("metaworld", {}).get("tasks", {}).items():
            merged["metaworld"]["tasks"].setdefault(task, {}).update(row)
            if row.get("finetuned"):
                sources[task] = Path(path).name
        for key in ("aloha", "fetch"):
            if report.get(key):
                merged[key] = report[key]
    order = {t: i for i, t in enumerate(MW_TASKS)}
    tasks = merged["metaworld"]["tasks"]
    merged["metaworld"]["tasks"] = dict(sorted(tasks.items(), key=lambda kv: order.get(kv[0], len(order))))
    return merged, sources


def render_readme(paths: list[Path], targets: list[Path]) -> list[Path]:
    """Write the merged table of ``paths`` between the ``thirdparty-table`` markers of ``targets``."""
    merged, _sources = merge_reports(paths)
    return _common.render_section(targets, "thirdparty-table", format_table(merged))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or reuse) every part and assemble the report."""
    import torch

    from fastvla.envs.rendering import preload_triton

    # Triton loaded after a GL context (dm_control's on import, a MuJoCo renderer) segfaults in LLVM.
    preload_triton()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    parts = Parts(work, args.fresh)
    start = time.perf_counter()
    common = {k: getattr(args, k) for k in ("episodes", "eval_seed", "image_size", "eval_max_steps")}
    recipe = {
        k: getattr(args, k)
        for k in (
            "demos",
            "max_steps",
            "expert_noise",
            "steps",
            "batch_size",
            "lr",
            "n_action_steps",
            "num_envs",
        )
    }
    # Cheap parts first (no model, no rendering), so a run stopped early still has every baseline.
    tasks: dict[str, Any] = {}
    for task in args.tasks:
        print(f"Meta-World {task}: scripted")
        settings = {"task": task, **common}
        tasks[task] = dict(
            parts.get(f"mw-{task}-scripted", settings, lambda t=task: metaworld_scripted(t, args))
        )
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {args.threads}",
        "git": _git_revision(),
        "versions": _versions(),
        "command": "benchmarks/thirdparty.py " + " ".join(args.argv),
        "metaworld": {
            "benchmark": "MT1, 50 goal/object variants fixed by benchmark_seed=0; the reset seed picks one",
            "cameras": list(CAMERAS),
            "eval": {**common, "note": "evaluation seeds are never used for recording (demos: seeds 0..)"},
            "recipe": {"preset": "tiny", "from_scratch": True, **recipe},
            "tasks": tasks,
        },
    }
    if args.aloha:
        print("gym-aloha AlohaTransferCube-v0: scripted")
        report["aloha"] = parts.get(
            "aloha", {"episodes": args.aloha_episodes, "seed": args.eval_seed}, lambda: aloha_scripted(args)
        )
    if args.fetch:
        print(f"Fetch {args.fetch_task}: heuristic")
        settings = {**common, "task": args.fetch_task}
        fetch = parts.get(f"fetch-{args.fetch_task}", settings, lambda: fetch_heuristic(args))
        report["fetch"] = {"task": args.fetch_task, **fetch}
    finetune = args.tasks if args.finetune_tasks is None else args.finetune_tasks
    report["metaworld"]["finetuned_tasks"] = list(finetune)
    for task in finetune:
        print(f"Meta-World {task}: record, train, evaluate")
        ft = parts.get(
            f"mw-{task}-finetuned",
            {"task": task, **common, **recipe},
            lambda t=task: metaworld_finetuned(t, args, work),
        )
        tasks[task].update({k: ft[k] for k in ("finetuned", "demos", "train")}, finetuned_wall_s=ft["wall_s"])
    report["wall_s_this_run"] = round(time.perf_counter() - start, 1)
    report["wall_s_parts"] = round(_sum_wall(report), 1)
    return report


def _sum_wall(report: dict[str, Any]) -> float:
    total = 0.0
    for row in report["metaworld"]["tasks"].values():
        total += row.get("wall_s", 0.0) + row.get("finetuned_wall_s", 0.0)
    for key in ("aloha", "fetch"):
        total += (report.get(key) or {}).get("wall_s", 0.0)
    return total


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--render-readme",
        nargs="+",
        metavar="JSON",
        help="only merge these runs' JSONs into the table between README.md's and docs/thirdparty.md's "
        "thirdparty-table markers (later files fill or replace parts per task), then exit",
    )
    parser.add_argument("--tasks", nargs="+", default=list(MW_TASKS), help="Meta-World MT1 tasks")
    parser.add_argument("--episodes", type=int, default=30, help="evaluation episodes (seeds) per policy")
    parser.add_argument("--eval-seed", type=int, default=1000, help="first evaluation seed")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=150, help="episode cap while recording demos")
    parser.add_argument(
        "--eval-max-steps", type=int, default=500, help="evaluation episode cap (Meta-World's episode length)"
    )
    parser.add_argument("--demos", type=int, default=100, help="scripted demonstrations per task")
    parser.add_argument("--expert-noise", type=float, default=0.1, help="action noise of the demonstrations")
    parser.add_argument("--steps", type=int, default=2000, help="training updates per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-action-steps", type=int, default=1, help="actions executed per predicted chunk")
    parser.add_argument("--num-envs", type=int, default=1, help="parallel envs while recording")
    parser.add_argument("--eval-envs", type=int, default=1, help="parallel envs in the fine-tuned evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--finetune-tasks",
        nargs="*",
        default=None,
        help="tasks to fine-tune FastVLA on (default: all of --tasks; none: scripted baselines only)",
    )
    parser.add_argument("--aloha", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--aloha-episodes", type=int, default=30)
    parser.add_argument("--fetch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fetch-task", default="FetchPickAndPlace-v4")
    parser.add_argument("--work-dir", default="outputs/thirdparty")
    parser.add_argument("--fresh", action="store_true", help="recompute parts stored in --work-dir")
    parser.add_argument("--out", default="benchmarks/results/thirdparty.json")
    args = parser.parse_args(argv)
    if args.render_readme:
        root = Path(__file__).resolve().parent.parent
        changed = render_readme(
            [Path(p) for p in args.render_readme], [root / "README.md", root / "docs" / "thirdparty.md"]
        )
        print(f"updated: {', '.join(str(p.relative_to(root)) for p in changed) or 'nothing (up to date)'}")
        return
    extra = sorted(set(args.finetune_tasks or ()) - set(args.tasks))
    if extra:
        parser.error(f"--finetune-tasks {extra} are not in --tasks {args.tasks}")
    args.argv = argv
    report = run(args)
    _common.write_json(args.out, report, indent=1)
    print(format_table(report))
    walls = f"{report['wall_s_this_run']:.0f} s this run, {report['wall_s_parts']:.0f} s of parts"
    print(f"wrote {args.out} ({walls})")


if __name__ == "__main__":
    main()
