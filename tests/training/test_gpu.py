"""GPU paths of training: bf16/fp16 autocast + loss scaling, 4-bit QLoRA, checkpoint + resume (CUDA only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training import checkpoint as ckpt
from fastvla.training.loop import Trainer

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_qlora_mixed_precision_trains_and_resumes(
    dataset_root: Path, frame_cache: Path, tmp_path: Path, precision: str
) -> None:
    def config(**kw) -> TrainConfig:
        return TrainConfig(
            data=DataConfig(root=str(dataset_root), cache_dir=str(frame_cache), val_episodes=(2,)),
            model=ModelConfig(quantization="4bit", gradient_checkpointing=True),
            optim=OptimConfig(optimizer="paged_adamw8bit", warmup_steps=1),
            output_dir=str(tmp_path),
            batch_size=8,
            log_every=2,
            save_every=2,
            val_every=2,
            mixed_precision=precision,
            device="cuda",
            progress=False,
            **kw,
        )

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
