"""Parameter groups (LoRA/backbone vs fresh head learning rates), optimisers and the schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from fastvla.training.config import OptimConfig
from fastvla.training.optim import (
    build_optimizer,
    build_scheduler,
    is_head_parameter,
    lr_factor,
    param_groups,
)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.action_head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_head_patterns_ignore_wrapper_prefixes() -> None:
    heads = ("action_head", "vision.film_out")
    assert is_head_parameter("action_head.blocks.0.weight", heads)
    assert is_head_parameter("base_model.model.vision.film_out.proj.weight", heads)
    assert not is_head_parameter("vision.tower.film_outer.weight", heads)
    assert not is_head_parameter("language_model.layers.0.q_proj.lora_A.default.weight", heads)


def test_param_groups_split_lr_and_decay() -> None:
    cfg = OptimConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.1, head_modules=("action_head",))
    groups = {g["name"]: g for g in param_groups(_Toy(), cfg)}
    assert set(groups) == {"backbone/decay", "backbone/no_decay", "head/decay", "head/no_decay"}
    assert groups["head/decay"]["lr"] == 1e-3 and groups["backbone/decay"]["lr"] == 1e-4
    assert groups["backbone/no_decay"]["weight_decay"] == 0.0 and groups["head/decay"]["weight_decay"] == 0.1
    n_trainable = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_trainable == 4 * 4 + 4 + 4 + 4 + 4 * 2 + 2  # the frozen layer is left out


def test_no_trainable_parameters_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, OptimConfig())


def test_schedule_warmup_then_cosine_to_floor() -> None:
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.1, scheduler="cosine")
    factors = [lr_factor(s, 110, cfg) for s in range(110)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))  # monotone decay
    assert lr_factor(10_000, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(50, 110, OptimConfig(warmup_steps=0, scheduler="constant")) == 1.0


def test_scheduler_steps_group_lrs_together() -> None:
    cfg = OptimConfig(lr=1e-4, head_lr=1e-3, warmup_steps=2, head_modules=("action_head",))
    opt = build_optimizer(_Toy(), cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["head/decay"] == pytest.approx(1e-3) and lrs["backbone/decay"] == pytest.approx(1e-4)


@pytest.mark.parametrize("name", ["adamw", "adamw8bit", "paged_adamw8bit"])
def test_optimizers_step_and_lower_a_loss(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    x, y = torch.randn(128, 64), torch.randn(128, 1)
    opt = build_optimizer(model, OptimConfig(optimizer=name, lr=1e-3, head_modules=()))
    first = None
    for _ in range(30):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.8 * first
