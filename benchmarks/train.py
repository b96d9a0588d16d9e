"""Training throughput and peak memory: FastVLA's training step vs a plain PyTorch loop, in one run.

Rows, per batch size, each in its own process (so every peak-memory figure is its own):

* ``baseline``: the same model (same preset, quantisation and LoRA) trained by a bare loop —
  ``torch.optim.AdamW`` over the trainable parameters, autocast, forward/backward/step;
* ``fastvla-step``: FastVLA's training step — Accelerate, parameter groups (LoRA vs head learning rates),
  gradient clipping, warm-up/cosine schedule — on the same synthetic batches;
* ``fastvla-graphed`` (CUDA): the update ``fastvla train`` runs on a GPU — fused Triton kernels in the
  decoder and the whole update captured in CUDA graphs
  (:class:`fastvla.training.graphed_step.GraphedTrainStep`);
* ``fastvla-train`` (CPU, when a dataset is available): ``fastvla.train`` end to end on a recorded LeRobot
  dataset, data loading included (samples/s of the last logging window).

Both step rows preprocess a uint8 batch with the model's processor every step, as training does.

    python benchmarks/train.py                                   # CPU, tiny preset, batch 8 and 32
    python benchmarks/train.py --preset openvla-7b-shape --load-in-4bit --batch-sizes 4,8,16   # GPU

The 7B-shaped model is written once (bf16, random weights) to a temporary folder and every row loads
it quantised. Prints a table and writes JSON (``--json``; default ``$OUT/train.json`` under the device
tool, else ``benchmarks/results/train-<device>.json``) naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

HERE = Path(__file__).resolve()
FIXTURE = HERE.parents[1] / "tests" / "fixtures" / "lerobot" / "sim_2cam_video_v30"
TASK = "pick up the red cube and put it in the bin"


# ------------------------------------------------------------------------------------------ one row
def _spec(model_config: Any) -> Any:
    from fastvla.training.data import DataSpec

    stats = {
        "observation.state": {"mean": [0.0] * model_config.state_dim, "std": [1.0] * model_config.state_dim},
        "action": {"min": [-1.0] * model_config.action_dim, "max": [1.0] * model_config.action_dim},
    }
    return DataSpec(
        root=Path("."),
        cameras=list(model_config.cameras),
        state_dim=model_config.state_dim,
        action_dim=model_config.action_dim,
        fps=10,
        stats=stats,
        train_episodes=[0],
        val_episodes=[],
    )


def _train_config(args: argparse.Namespace, batch_size: int) -> Any:
    from fastvla.training import ModelConfig, OptimConfig, TrainConfig

    model = ModelConfig(
        preset=args.preset,
        checkpoint=args.checkpoint or "",
        quantization="4bit" if args.load_in_4bit else "none",
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_layers=args.checkpoint_layers,
        lora_dropout=0.0,  # every row alike; graphs + checkpointing need it (no RNG replay)
        kernels="on" if args.kernels else "off",
    )
    return TrainConfig(
        model=model,
        optim=OptimConfig(optimizer=args.optimizer, warmup_steps=2),
        batch_size=batch_size,
        steps=args.warmup + args.steps,
        device=args.device,
    )


def _batch(config: Any, batch_size: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
    shape = (batch_size, 3, h, w)
    batch: dict[str, Any] = {
        f"observation.images.{c}": torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        for c in config.cameras
    }
    batch["observation.state"] = torch.randn(batch_size, config.state_dim, generator=g)
    batch["action"] = torch.rand(batch_size, config.chunk_size, config.action_dim, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool)
    batch["task"] = [TASK] * batch_size
    return batch


def _time_steps(
    step: Any, device: Any, warmup: int, steps: int
) -> tuple[list[float], list[float], list[float]]:
    """Wall seconds, CPU seconds (all threads of this process) and losses of the timed steps.

    CPU seconds per step are robust to other processes sharing the machine; wall time is not.
    """
    import torch

    times, cpu, losses = [], [], []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            losses.append(float(loss))
    return times, cpu, losses


def run_step_row(args: argparse.Namespace, kind: str, batch_size: int) -> dict[str, Any]:
    """``baseline`` or ``fastvla-step`` at ``batch_size`` in this process."""
    import torch

    from fastvla.model import preset_config
    from fastvla.training import factory
    from fastvla.training.optim import build_optimizer, build_scheduler

    cfg = _train_config(args, batch_size)
    acc = factory.make_accelerator(cfg)
    device = acc.device
    spec = _spec(preset_config(args.preset))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, processor = factory.build_model(cfg, spec, device)
    batch = _batch(preset_config(args.preset), batch_size)
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    if kind == "baseline":
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        amp = factory.resolve_mixed_precision(cfg.mixed_precision, device.type)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

        def step() -> torch.Tensor:
            inputs = processor(batch, device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**inputs).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

    elif kind == "fastvla-graphed":
        from fastvla.training.graphed_step import GraphedTrainStep

        opt = build_optimizer(model, cfg.optim)
        sched = build_scheduler(opt, cfg.optim, cfg.steps)
        amp = factory.resolve_mixed_precision(cfg.mixed_precision, device.type)
        graphed = GraphedTrainStep(
            model,
            opt,
            processor.pad_instructions(factory.model_inputs(processor, batch, device)),
            max_grad_norm=cfg.optim.max_grad_norm,
            autocast_dtype=torch.bfloat16 if amp == "bf16" else None,
        )

        def step() -> torch.Tensor:
            inputs = processor.pad_instructions(factory.model_inputs(processor, batch, device))
            loss, _ = graphed.update([inputs])
            sched.step()
            return loss

    else:
        opt = build_optimizer(model, cfg.optim)
        sched = build_scheduler(opt, cfg.optim, cfg.steps)
        model, opt = acc.prepare(model, opt)

        def step() -> torch.Tensor:
            inputs = factory.model_inputs(processor, batch, device)
            loss = model(**inputs).loss
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

    times, cpu, losses = _time_steps(step, device, args.warmup, args.steps)
    median = sorted(times)[len(times) // 2]
    cpu_median = sorted(cpu)[len(cpu) // 2]
    row = {
        "row": kind,
        "batch_size": batch_size,
        "step_s": round(median, 4),
        "samples_per_s": round(batch_size / median, 2),
        "cpu_s_per_step": round(cpu_median, 4),
        "samples_per_cpu_s": round(batch_size / max(cpu_median, 1e-9), 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if device.type == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["weights_gib"] = round(weights_gib, 2)
    else:
        row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def run_train_row(args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """``fastvla.train`` end to end on a recorded dataset (CPU demo path: uint8 loader, workers)."""
    from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from fastvla.training.loop import Trainer

    with tempfile.TemporaryDirectory(prefix="fastvla-bench-train-") as tmp:
        cfg = TrainConfig(
            data=DataConfig(root=str(args.dataset), val_fraction=0.0, num_workers=args.num_workers),
            model=ModelConfig(preset=args.preset),
            optim=OptimConfig(warmup_steps=2),
            output_dir=tmp,
            steps=2 * args.steps,
            batch_size=batch_size,
            log_every=args.steps,
            save_every=0,
            val_every=0,
            progress=False,
            tensorboard=False,
            device=args.device,
        )
        trainer = Trainer(cfg)
        start_cpu = time.process_time()
        trainer.fit()
        fit_cpu = time.process_time() - start_cpu  # whole fit: both windows, final checkpoint, export
        last = [h for h in trainer.history if "train/samples_per_s" in h][-1]
        workers = trainer.train_loader.num_workers
    samples_per_s = last["train/samples_per_s"]
    return {
        "row": "fastvla-train",
        "batch_size": batch_size,
        "step_s": round(batch_size / samples_per_s, 4),
        "samples_per_s": round(samples_per_s, 2),
        "samples_per_cpu_s": round(trainer.samples_seen / max(fit_cpu, 1e-9), 2),
        "loss_last": round(last["train/loss"], 4),
        "num_workers": workers,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# ------------------------------------------------------------------------------------------- driver
def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model and cores, GPU, library versions."""
    import bitsandbytes
    import torch
    import transformers

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _write_checkpoint(preset: str, folder: Path) -> None:
    """The preset with random bf16 weights, built on the GPU and saved once for every row to load."""
    import torch

    from fastvla.model import FastVLAModel, FastVLAProcessor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = FastVLAModel.from_preset(preset, dtype=torch.bfloat16, device=device)
    model.save_pretrained(folder)
    FastVLAProcessor.from_preset(preset).save_pretrained(folder)


def _child(args: argparse.Namespace, row: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--row", row, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    kind, _, bs = row.partition(":")
    return {"row": kind, "batch_size": int(bs), "error": " | ".join(tail)[-400:]}


def _table(rows: list[dict[str, Any]], title: str) -> str:
    mem_key = "peak_gib" if any("peak_gib" in r for r in rows) else "peak_rss_mib"
    unit = "GiB" if mem_key == "peak_gib" else "MiB RSS"
    header = (
        f"{'row':<15}{'batch':>6}{'step s':>10}{'samples/s':>11}{'samples/cpu-s':>15}{'peak ' + unit:>16}"
    )
    lines = [title, header + "  notes"]
    base = {r["batch_size"]: r.get("samples_per_s") for r in rows if r["row"] == "baseline"}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['row']:<15}{r['batch_size']:>6}  error: {r['error']}")
            continue
        note = ""
        if r["row"] != "baseline" and base.get(r["batch_size"]):
            note = f"{r['samples_per_s'] / base[r['batch_size']]:.2f}x baseline"
        if "num_workers" in r:
            note += f"{', ' if note else ''}{r['num_workers']} loader workers"
        lines.append(
            f"{r['row']:<15}{r['batch_size']:>6}{r['step_s']:>10.3f}{r['samples_per_s']:>11.1f}"
            f"{r.get('samples_per_cpu_s', float('nan')):>15.1f}{r.get(mem_key, float('nan')):>16.1f}  {note}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, openvla-7b-shape, ...)")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 tower + decoder, LoRA adapters")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: 8,32 CPU; 4,8,16 GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10 CPU, 5 GPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit", "paged_adamw8bit"])
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for 4-bit on GPU",
    )
    parser.add_argument(
        "--checkpoint-layers", type=int, default=0, help="checkpoint the first N decoder layers (0=all)"
    )
    parser.add_argument(
        "--kernels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fused kernels (default on CUDA)",
    )
    parser.add_argument("--dataset", type=Path, default=FIXTURE, help="LeRobot dataset (end-to-end row)")
    parser.add_argument("--num-workers", type=int, default=-1, help="DataLoader workers (end-to-end row)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row, print RESULT json
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.steps = args.steps or (5 if cuda else 10)
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = bool(cuda and args.load_in_4bit)
    if args.kernels is None:
        args.kernels = cuda
    if args.row:
        kind, _, bs = args.row.partition(":")
        if kind == "fastvla-train":
            result = run_train_row(args, int(bs))
        else:
            result = run_step_row(args, kind, int(bs))
        print("RESULT " + json.dumps(result), flush=True)
        return

    sizes = [int(b) for b in (args.batch_sizes or ("4,8,16" if cuda else "8,32")).split(",")]
    passthrough = [
        "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--device", args.device, "--optimizer", args.optimizer, "--num-workers", str(args.num_workers),
        "--dataset", str(args.dataset),
        "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing",
        "--checkpoint-layers", str(args.checkpoint_layers),
        "--kernels" if args.kernels else "--no-kernels",
    ]  # fmt: skip
    if args.load_in_4bit:
        passthrough.append("--load-in-4bit")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fastvla-bench-ckpt-") as tmp:
        if args.load_in_4bit:  # build the big model once; every row loads it quantised
            print(f"writing a random {args.preset} checkpoint to {tmp} ...", flush=True)
            _write_checkpoint(args.preset, Path(tmp))
            passthrough += ["--checkpoint", tmp]
        for bs in sizes:
            kinds = ["baseline", "fastvla-step"] + (["fastvla-graphed"] if cuda else [])
            if not cuda and not args.load_in_4bit and args.dataset.is_dir():
                kinds.append("fastvla-train")
            for kind in kinds:
                row = _child(args, f"{kind}:{bs}", passthrough)
                print(json.dumps(row), flush=True)
                rows.append(row)

    info = machine()
    where = info.get("gpu") if cuda else f"{info['cpu']} ({info['cores']} cores)"
    title = (
        f"fastvla train benchmark: preset {args.preset}{' 4-bit+LoRA' if args.load_in_4bit else ''}, "
        f"{args.steps} timed steps, on {where}"
    )
    print(_table(rows, title))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("row",)}
    result = {"benchmark": "train", "machine": info, "config": config, "rows": rows}
    out = args.json
    if out is None:
        out = (
            Path(os.environ["OUT"]) / "train.json"
            if os.environ.get("OUT")
            else HERE.parent / "results" / f"train-{'cuda' if cuda else 'cpu'}.json"
        )
    _common.write_json(out, result, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
