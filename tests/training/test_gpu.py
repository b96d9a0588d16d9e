"""GPU paths of training: bf16/fp16 autocast + loss scaling, 4-bit QLoRA, checkpoint + resume (CUDA only)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch

from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training import checkpoint as ckpt
from fastvla.training.loop import Trainer

pytestmark = pytest.mark.gpu


def _qlora_config(dataset_root: Path, frame_cache: Path, out: Path, **kw: Any) -> TrainConfig:
    """4-bit QLoRA on the GPU over the fixture dataset, saved and validated every 2 steps; ``kw`` replaces."""
    fields = {
        "data": DataConfig(root=str(dataset_root), cache_dir=str(frame_cache), val_episodes=(2,)),
        "model": ModelConfig(quantization="4bit", gradient_checkpointing=True),
        "optim": OptimConfig(optimizer="paged_adamw8bit", warmup_steps=1),
        "output_dir": str(out),
        "batch_size": 8,
        "log_every": 2,
        "save_every": 2,
        "val_every": 2,
        "device": "cuda",
        "progress": False,
    }
    return TrainConfig(**{**fields, **kw})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_qlora_mixed_precision_trains_and_resumes(
    dataset_root: Path, frame_cache: Path, tmp_path: Path, precision: str
) -> None:
    config = functools.partial(_qlora_config, dataset_root, frame_cache, tmp_path, mixed_precision=precision)

    trainer = Trainer(config(steps=2))
    trainer.fit()
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in trainer.history if "train/loss" in h)
    assert any("train/peak_mem_gib" in h for h in trainer.history)
    if precision == "fp16":
        assert (ckpt.checkpoint_path(tmp_path, 2) / "scaler.pt").is_file()
    resumed = Trainer(config(steps=4, resume=True))
    assert resumed.step == 2
    resumed.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_update_replays_the_eager_update() -> None:
    """Captured graphs and the same sequence run eagerly give the same losses and weights."""
    import copy

    from fastvla.training.graphed_step import GraphedTrainStep

    from ._graphed_toy import Toy, batch

    torch.manual_seed(0)
    models = [Toy().cuda(), None]
    models[1] = copy.deepcopy(models[0])
    batches = [{k: v.cuda() for k, v in batch(u).items()} for u in range(6)]
    losses = []
    for model, capture in zip(models, (True, False), strict=True):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        kw = {"max_grad_norm": 0.5, "autocast_dtype": None, "capture": capture}
        step = GraphedTrainStep(model, opt, batches[0], **kw)
        assert step.captured is capture
        losses.append([float(step.update([b])[0]) for b in batches])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0][-1] < losses[0][0]
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(models[0].seen) == float(models[1].seen) == 6  # warm-up's buffer updates were undone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fastvla_train_with_cuda_graphs_trains_and_resumes(
    dataset_root: Path, frame_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = functools.partial(
        _qlora_config,
        dataset_root,
        frame_cache,
        tmp_path,
        model=ModelConfig(quantization="4bit", gradient_checkpointing=True, lora_dropout=0.0),
        optim=OptimConfig(optimizer="adamw", warmup_steps=1),
        grad_accum_steps=2,
        save_every=3,
        val_every=3,
        mixed_precision="bf16",
        cuda_graphs="on",
    )

    trainer = Trainer(config(steps=3))
    trainer.fit()
    assert trainer.graphed is not None and trainer.graphed.captured
    assert "captured in CUDA graphs" in capsys.readouterr().out
    losses = [h["train/loss"] for h in trainer.history if "train/loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any("val/loss" in h for h in trainer.history)
    resumed = Trainer(config(steps=6, resume=True))
    assert resumed.step == 3
    resumed.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 6]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpu_ddp_with_cuda_graphs_ranks_agree(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    """accelerate launch on 2 GPUs: graphed updates + the by-hand NCCL all-reduce keep the ranks equal."""
    from .test_ddp import assert_ranks_agree, ddp_config, launch_two_ranks

    out = tmp_path / "run"
    config = ddp_config(dataset_root, frame_cache, out, "cuda", mixed_precision="bf16", cuda_graphs="on")
    result = launch_two_ranks(tmp_path, config, "bf16")
    assert "captured in CUDA graphs" in result.stdout
    assert_ranks_agree(out)
