"""``fastvla demo``: the real user flow — a pretrained VLA in 4-bit, LoRA-fine-tuned on new demonstrations.

1. **Record** scripted-expert demonstrations of the held-out variation (instructions naming purple, which the
   shipped ``sim-base`` checkpoint never heard in pretraining) into a LeRobot v3.0 dataset.
2. **Fine-tune** ``sim-base`` with QLoRA: the checkpoint loads in 4-bit NF4 (bitsandbytes), LoRA adapters
   are added through :meth:`FastVLAModel.get_peft_model`, FastVLA's small heads train in full; the adapters
   are merged into the full-precision base at export.
3. **Evaluate** in closed loop, on the same held-out seeds: the base before fine-tuning, the fine-tuned
   policy in fp32 (merged) and loaded in NF4, with videos, ``eval_info.json`` and a report each.
4. **Summarise**: the three success rates side by side, wall time per stage, where every artefact is.

Every stage resumes: an existing dataset is reused, training continues from its last checkpoint, so a
crashed or interrupted demo picks up where it stopped. ``make demo`` runs this with the defaults below;
nothing is downloaded (the base ships in ``fastvla/checkpoints/sim-base``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEMO_TASK = "fastvla/ReachCube-v0"


@dataclass
class DemoConfig:
    """Settings of the demo; the defaults finish in about 10 minutes on a 2-core CPU.

    Attributes:
        out: folder for the dataset, the fine-tuning run, evaluations and the summary.
        base: the pretrained checkpoint to fine-tune (a folder or hub id; default: the shipped sim-base).
        task: Gymnasium id of the task.
        env_kwargs: extra constructor arguments of the task (default: instructions naming the held-out
            colour only).
        cameras: cameras recorded and fed to the policy (the base's).
        image_size: rendered and training resolution (the base's).
        episodes: demonstrations to record.
        expert_noise: action noise of the scripted expert (diverse demonstrations).
        steps: optimizer updates of the QLoRA fine-tuning.
        batch_size: training batch size.
        lr: peak learning rate (adapters and heads).
        lora_r: LoRA rank.
        n_action_steps: actions executed per predicted chunk before re-planning (closed-loop feedback).
        eval_episodes: closed-loop episodes per policy.
        eval_seed: seed of the first evaluation episode (disjoint from the recorded seeds).
        eval_batch_size: parallel environments during evaluation.
        max_videos: videos rendered per evaluation.
        skip_4bit: evaluate the fine-tuned policy in fp32 only.
    """

    out: str = "outputs/demo"
    base: str = ""
    task: str = DEMO_TASK
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 64
    episodes: int = 200
    expert_noise: float = 0.1
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    lora_r: int = 16
    n_action_steps: int = 1
    eval_episodes: int = 50
    eval_seed: int = 100_000
    eval_batch_size: int = 2
    max_videos: int = 4
    skip_4bit: bool = False

    def __post_init__(self) -> None:
        from fastvla.envs.colors import HELD_OUT_COLOR

        self.env_kwargs = {"instruction_colors": [HELD_OUT_COLOR], **self.env_kwargs}

    @property
    def base_path(self) -> str:
        """``base``, or the shipped sim-base folder when empty."""
        if self.base:
            return self.base
        from fastvla.checkpoints import path

        return str(path("sim-base"))


def _record(cfg: DemoConfig, dataset_dir: Path) -> dict[str, Any]:
    from fastvla.datasets import LeRobotDataset
    from fastvla.datasets.recorder import record

    have = 0
    if (dataset_dir / "meta" / "info.json").exists():
        have = LeRobotDataset(dataset_dir).meta.total_episodes
        if have >= cfg.episodes:
            print(f"[1/3] reusing {have} recorded episodes in {dataset_dir}")
            return {"episodes": have, "reused": True}
    missing = cfg.episodes - have
    print(
        f"[1/3] recording {missing} scripted demonstrations of {cfg.task} {cfg.env_kwargs} -> {dataset_dir}"
    )
    summary = record(  # seeds continue after any earlier, interrupted recording into the folder
        cfg.task,
        dataset_dir,
        episodes=missing,
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        expert_noise=cfg.expert_noise,
        env_kwargs=cfg.env_kwargs,
    )
    return {
        "episodes": have + summary.episodes_saved,
        "frames": summary.frames_saved,
        "seconds": summary.seconds,
    }


def _finetune(cfg: DemoConfig, dataset_dir: Path, run_dir: Path) -> Path:
    from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig, train

    print(f"[2/3] QLoRA: {cfg.base_path} in 4-bit NF4 + LoRA r={cfg.lora_r}, {cfg.steps} steps -> {run_dir}")
    train_cfg = TrainConfig(
        output_dir=str(run_dir),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=max(cfg.steps // 4, 1),
        val_every=0,
        log_every=50,
        resume=True,
        data=DataConfig(root=str(dataset_dir), cameras=list(cfg.cameras), image_size=cfg.image_size),
        model=ModelConfig(checkpoint=cfg.base_path, quantization="4bit", lora="on", lora_r=cfg.lora_r),
        optim=OptimConfig(lr=cfg.lr, head_lr=cfg.lr, warmup_steps=min(50, cfg.steps // 10)),
    )
    return Path(train(train_cfg))


def _evaluate(cfg: DemoConfig, policy_dir: str | Path, label: str, load_in_4bit: bool, out: Path) -> Any:
    import torch

    from fastvla.eval import evaluate, load_policy

    print(f"[3/3] evaluating {label} on {cfg.eval_episodes} episodes -> {out}")
    # The env workers render on the same cores: one torch thread avoids OpenMP oversubscription (10x+ slower).
    torch.set_num_threads(1)
    policy = load_policy(
        str(policy_dir), load_in_4bit=load_in_4bit, device="cpu", n_action_steps=cfg.n_action_steps
    )
    return evaluate(
        policy,
        cfg.task,
        n_episodes=cfg.eval_episodes,
        batch_size=cfg.eval_batch_size,
        seed=cfg.eval_seed,
        env_kwargs={"cameras": cfg.cameras, "image_size": cfg.image_size, **cfg.env_kwargs},
        out_dir=out,
        video_dir=out / "videos",
        max_videos=cfg.max_videos,
        policy_name=label,
    )


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo end to end and return its summary (also written to ``<out>/demo_summary.json``).

    Example:
        >>> from fastvla.demo import DemoConfig, run_demo
        >>> cfg = DemoConfig(out="/tmp/demo", episodes=4, steps=5, eval_episodes=2)
        >>> summary = run_demo(cfg)  # doctest: +SKIP
    """
    from fastvla.envs.rendering import preload_triton
    from fastvla.eval import comparison_table
    from fastvla.utils.io import atomic_write_text

    preload_triton()  # before any GL context exists in this process (see docs/envs.md)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    recorded = _record(cfg, out / "dataset")
    timings["record_s"] = time.perf_counter() - start

    start = time.perf_counter()
    policy_dir = _finetune(cfg, out / "dataset", out / "finetune")
    timings["finetune_s"] = time.perf_counter() - start

    runs = [("base (before fine-tuning)", "base", cfg.base_path, False)]
    runs.append(("fine-tuned, fp32 (merged)", "fp32", policy_dir, False))
    if not cfg.skip_4bit:
        runs.append(("fine-tuned, NF4", "nf4", policy_dir, True))
    results = {}
    for label, key, folder, four_bit in runs:
        start = time.perf_counter()
        results[label] = _evaluate(cfg, folder, label, four_bit, out / f"eval_{key}")
        timings[f"eval_{key}_s"] = time.perf_counter() - start

    table = comparison_table(results)
    keys = {label: key for label, key, _, _ in runs}
    summary = {
        "config": {**asdict(cfg), "base": cfg.base_path},
        "recorded": recorded,
        "policy_dir": str(policy_dir),
        "success": {keys[k]: r.success_rate for k, r in results.items()},
        "success_ci95": {keys[k]: list(r.success_ci95) for k, r in results.items()},
        "reports": {keys[k]: str(out / f"eval_{keys[k]}" / "report.md") for k in results},
        "timings_s": timings,
    }
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2))
    print(f"\n{cfg.task}, instructions {cfg.env_kwargs}\n" + table)
    stages = ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
    print(f"\nwall time: {sum(timings.values()):.0f} s ({stages})")
    print(f"policy:  {policy_dir}\nreports: {', '.join(summary['reports'].values())}")
    print(f"videos:  {out}/eval_*/videos/\nsummary: {out / 'demo_summary.json'}")
    return summary


def _run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        out=args.out,
        base=args.base,
        task=args.task,
        env_kwargs=json.loads(args.env_kwargs),
        episodes=args.episodes,
        steps=args.steps,
        batch_size=args.batch_size,
        n_action_steps=args.n_action_steps,
        eval_episodes=args.eval_episodes,
        skip_4bit=args.skip_4bit,
    )
    run_demo(cfg)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla demo``."""
    d = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="record, QLoRA-fine-tune the shipped pretrained base, evaluate (base vs fp32 vs NF4)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    parser.add_argument("--base", default="", help="checkpoint to fine-tune (default: the shipped sim-base)")
    parser.add_argument("--task", default=d.task, help=f"Gymnasium id (default {d.task})")
    parser.add_argument(
        "--env-kwargs",
        default="{}",
        help=f"JSON object of env constructor arguments (default {json.dumps(d.env_kwargs)})",
    )
    parser.add_argument("--episodes", type=int, default=d.episodes, help="demonstrations to record")
    parser.add_argument("--steps", type=int, default=d.steps, help="fine-tuning steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size")
    parser.add_argument(
        "--n-action-steps", type=int, default=d.n_action_steps, help="actions executed per predicted chunk"
    )
    parser.add_argument("--eval-episodes", type=int, default=d.eval_episodes, help="episodes per policy")
    parser.add_argument(
        "--skip-4bit", action="store_true", help="evaluate the fine-tuned policy in fp32 only"
    )
    parser.set_defaults(func=_run)
    return parser
