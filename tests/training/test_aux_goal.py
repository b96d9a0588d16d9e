"""Training with the auxiliary hindsight-goal loss (``--model.aux-goal-weight``): flag, data, log, export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from fastvla.model import FastVLAConfig, FastVLAModel
from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training.args import add_config_arguments, config_from_args
from fastvla.training.graphed_step import GraphedTrainStep
from fastvla.training.loop import Trainer


def _config(dataset_root: Path, frame_cache: Path, out: Path, weight: float) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(root=str(dataset_root), val_episodes=(2,), cache_dir=str(frame_cache), num_workers=0),
        model=ModelConfig(aux_goal_weight=weight),
        optim=OptimConfig(lr=1e-3, head_lr=1e-3, warmup_steps=1),
        output_dir=str(out),
        steps=4,
        batch_size=8,
        log_every=2,
        save_every=0,
        val_every=4,
        progress=False,
    )


def test_flag_reaches_the_config_and_round_trips(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--model.aux-goal-weight", "0.5"]))
    assert cfg.model.aux_goal_weight == 0.5
    cfg.save(tmp_path / "config.yaml")
    assert TrainConfig.load(tmp_path / "config.yaml") == cfg
    with pytest.raises(ValueError, match="aux_goal_weight must be >= 0"):
        ModelConfig(aux_goal_weight=-0.1)
    with pytest.raises(ValueError, match=r"--model\.aux-goal-weight"):
        ModelConfig(preset_overrides='{"aux_goal_weight": 0.5}')


def test_short_run_logs_the_aux_loss_and_exports_the_head(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    trainer = Trainer(_config(dataset_root, frame_cache, tmp_path, 0.5))
    assert "aux_goal" in trainer.train_set[0] and "aux_goal" not in trainer.val_set[0]
    policy = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    aux = [r["train/aux_goal_loss"] for r in rows if "train/aux_goal_loss" in r]
    assert len(aux) == 2 and all(a > 0 for a in aux)
    train_rows = [r for r in rows if "train/loss" in r]
    assert all(r["train/loss"] > 0.5 * r["train/aux_goal_loss"] for r in train_rows)  # loss includes it
    assert FastVLAConfig.from_pretrained(policy).aux_goal_weight == 0.5
    assert FastVLAModel.from_pretrained(policy).aux_goal_head is not None


def test_weight_zero_run_has_no_aux_anything(dataset_root: Path, frame_cache: Path, tmp_path: Path) -> None:
    cfg = _config(dataset_root, frame_cache, tmp_path, 0.0)
    trainer = Trainer(TrainConfig.from_dict({**cfg.to_dict(), "steps": 2, "val_every": 0}))
    assert "aux_goal" not in trainer.train_set[0]
    assert trainer.accelerator.unwrap_model(trainer.model).aux_goal_head is None
    trainer.fit()
    assert all("train/aux_goal_loss" not in h for h in trainer.history)


def test_graphed_step_reports_the_aux_loss(dataset_root: Path, frame_cache: Path, tmp_path: Path) -> None:
    """The CUDA-graph update (run eagerly here, the same sequence) carries aux_goal and returns its loss."""
    from fastvla.training import factory

    trainer = Trainer(_config(dataset_root, frame_cache, tmp_path, 0.5))
    model = trainer.accelerator.unwrap_model(trainer.model)
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    inputs = trainer.processor.pad_instructions(factory.model_inputs(trainer.processor, batch, "cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model(**inputs).aux_loss
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    step = GraphedTrainStep(model, opt, inputs, autocast_dtype=None, capture=False)
    step.update([inputs])
    torch.testing.assert_close(step.aux_loss, expected.float())
