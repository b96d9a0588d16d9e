"""Two-process data-parallel training on CPU (accelerate launch, gloo): both ranks end with equal weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastvla.training import DataConfig, OptimConfig, TrainConfig
from fastvla.training import checkpoint as ckpt

DRIVER = """
import sys
from safetensors.torch import save_file
from fastvla.training import TrainConfig
from fastvla.training.checkpoint import trainable_state_dict
from fastvla.training.loop import Trainer

trainer = Trainer(TrainConfig.load(sys.argv[1]))
model = trainer.accelerator.unwrap_model(trainer.model)
rank = trainer.accelerator.process_index
save_file(trainable_state_dict(model), f"{trainer.out}/initial_rank{rank}.safetensors")
trainer.fit()
save_file(trainable_state_dict(model), f"{trainer.out}/final_rank{rank}.safetensors")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(
    tmp_path: Path, config: TrainConfig, mixed_precision: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``accelerate launch`` of :data:`DRIVER`, 2 processes, on ``config``; fails the test on a bad exit."""
    config.save(tmp_path / "config.yaml")
    (tmp_path / "driver.py").write_text(DRIVER)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        # accelerate's --cpu flag means one process; --multi_gpu on a machine without GPUs runs
        # torchrun, and Accelerator(cpu=True) then sets up MULTI_CPU with gloo.
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(tmp_path / "driver.py"), str(tmp_path / "config.yaml"),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env or dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def assert_ranks_agree(out: Path) -> dict[str, torch.Tensor]:
    """Both ranks end with equal trainable tensors, changed by training; returns rank 0's."""
    initial = load_file(out / "initial_rank0.safetensors")
    rank0, rank1 = load_file(out / "final_rank0.safetensors"), load_file(out / "final_rank1.safetensors")
    assert rank0.keys() == rank1.keys() == initial.keys()
    unequal = [n for n in rank0 if not torch.equal(rank0[n], rank1[n])]
    assert not unequal, f"ranks disagree on {len(unequal)} tensors, e.g. {unequal[:3]}"
    assert any(not torch.equal(rank0[n], initial[n]) for n in rank0), "training did not change the weights"
    return rank0


def ddp_config(dataset_root: Path, frame_cache: Path, out: Path, device: str, **kw: object) -> TrainConfig:
    """Six updates of 2 micro-batches of 4, saved and validated at step 3 and 6; ``kw`` adds or replaces
    fields."""
    fields: dict[str, object] = dict(
        data=DataConfig(root=str(dataset_root), cache_dir=str(frame_cache), val_episodes=(2,), num_workers=0),
        output_dir=str(out),
        steps=6,
        batch_size=4,
        grad_accum_steps=2,  # exercises no_sync on all but the last micro-batch
        save_every=3,
        val_every=3,
        log_every=3,
        device=device,
        progress=False,
        tensorboard=False,
        optim=OptimConfig(warmup_steps=1, lr=1e-3, head_lr=1e-3),
    )
    return TrainConfig(**{**fields, **kw})


@pytest.mark.slow
def test_two_process_cpu_ddp_ranks_agree(dataset_root: Path, frame_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = ddp_config(dataset_root, frame_cache, out, "cpu")
    result = launch_two_ranks(tmp_path, config, "no", env={**os.environ, "OMP_NUM_THREADS": "1"})

    state = json.loads((ckpt.checkpoint_path(out, 6) / ckpt.STATE_FILE).read_text())
    assert state["num_processes"] == 2 and state["samples_seen"] == 6 * 4 * 2 * 2
    assert "val loss" in result.stdout
    rank0 = assert_ranks_agree(out)
    saved = load_file(ckpt.checkpoint_path(out, 6) / ckpt.MODEL_FILE)
    assert all(torch.equal(saved[n], rank0[n]) for n in saved)


@pytest.mark.slow
def test_two_process_cpu_training_with_tensor_parallel_vision(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    """--parallel.tensor-parallel-vision 2: the frozen ViT tower sharded over both ranks (each rank's images
    encoded together), LoRA on the decoder data-parallel; ranks agree, validation runs, export is whole."""
    from fastvla.model import FastVLAModel
    from fastvla.training import ModelConfig, ParallelConfig

    out = tmp_path / "run"
    config = ddp_config(
        dataset_root,
        frame_cache,
        out,
        "cpu",
        model=ModelConfig(preset="tiny-vit", lora="on", lora_vision=False),
        parallel=ParallelConfig(tensor_parallel_vision=2),
        steps=4,
        grad_accum_steps=1,
        save_every=2,
        val_every=2,
        log_every=2,
    )
    result = launch_two_ranks(tmp_path, config, "no", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "val loss" in result.stdout
    assert "vision tower sharded over 2 processes, 1 data-parallel group(s)" in result.stdout
    # Rank 0's export merged its adapters in place: compare rank 1's final tensors with the last checkpoint
    # (rank 0's state, written just before the export).
    saved = load_file(ckpt.checkpoint_path(out, 4) / ckpt.MODEL_FILE)
    rank1, initial = load_file(out / "final_rank1.safetensors"), load_file(out / "initial_rank0.safetensors")
    assert saved.keys() == rank1.keys() and all(torch.equal(saved[n], rank1[n]) for n in saved)
    assert any(not torch.equal(saved[n], initial[n]) for n in saved), "training did not change the weights"
    exported = FastVLAModel.from_pretrained(out / "policy")
    q_proj = next(m for n, m in exported.vision.tower.named_modules() if n.endswith("q_proj"))
    assert q_proj.weight.shape == (64, 64)  # whole again, not one rank's half
