"""CPU offload options: AdamW's state on the host, activations saved in host memory (CPU checks).

On CPU parameters :class:`CPUOffloadAdamW` runs the same arithmetic as fused AdamW, so trajectories must be
identical; the GPU tests (``test_gpu_offload.py``) check the memory it frees.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch

from fastvla.model import FastVLAModel
from fastvla.model.presets import random_batch
from fastvla.training import MemoryConfig, OptimConfig, TrainConfig, factory
from fastvla.training.args import add_config_arguments, config_from_args
from fastvla.training.offload import CPUOffloadAdamW, activation_offload
from fastvla.training.optim import build_optimizer, build_scheduler


def _batch(seed: int, n: int = 4) -> dict[str, torch.Tensor]:
    return {**random_batch(n, seed, tokens=6), "action_is_pad": torch.zeros(n, 8, dtype=torch.bool)}


@pytest.fixture(scope="module")
def tiny() -> FastVLAModel:
    torch.manual_seed(0)
    return FastVLAModel.from_preset("tiny")


def _train(model, opt, steps, start: int = 0, schedule: bool = True) -> list[float]:
    sched = build_scheduler(opt, OptimConfig(warmup_steps=2), total_steps=10) if schedule else None
    losses = []
    for u in range(start, start + steps):
        loss = model(**_batch(u)).loss
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_offloaded_adamw_follows_fused_adamw_and_keeps_its_state_on_cpu(tiny: FastVLAModel) -> None:
    cfg = OptimConfig(lr=1e-3, head_lr=3e-3)
    a, b = copy.deepcopy(tiny), copy.deepcopy(tiny)
    reference = build_optimizer(a, cfg)
    for group in reference.param_groups:  # the host step uses the fused CPU kernel
        group.update(fused=True, foreach=None)
    offloaded = build_optimizer(b, cfg, offload=True)
    assert isinstance(offloaded, CPUOffloadAdamW) and len(offloaded.param_groups) > 1
    assert _train(a, reference, 4) == _train(b, offloaded, 4)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert offloaded.state_device() == "cpu"
    assert not offloaded.state  # nothing kept beside the parameters


def test_offloaded_adamw_resumes_from_its_state_dict(tiny: FastVLAModel) -> None:
    cfg = OptimConfig(lr=1e-3)
    whole = copy.deepcopy(tiny)
    uninterrupted = _train(whole, build_optimizer(whole, cfg, offload=True), 5, schedule=False)
    first = copy.deepcopy(tiny)
    opt = build_optimizer(first, cfg, offload=True)
    _train(first, opt, 3, schedule=False)
    state = copy.deepcopy(opt.state_dict())
    second = copy.deepcopy(tiny)
    second.load_state_dict(first.state_dict())  # weights first, as a checkpoint restores them
    resumed = build_optimizer(second, cfg, offload=True)
    resumed.load_state_dict(state)
    assert _train(second, resumed, 2, start=3, schedule=False) == uninterrupted[3:]


def test_activation_offload_keeps_the_math(tiny: FastVLAModel) -> None:
    grads = []
    for offload in (False, True):
        model = copy.deepcopy(tiny)
        ctx = (
            activation_offload(torch.device("cpu"))
            if offload
            else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        )
        with ctx:
            loss = model(**_batch(0)).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[0][0] == grads[1][0]
    for g, h in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.equal(g, h)


def test_offload_flags_parse_and_are_left_off_with_a_note_on_cpu() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(
        parser.parse_args(["--memory.offload-optimizer", "--memory.offload-activations"]), TrainConfig
    )
    assert cfg.memory == MemoryConfig(offload_optimizer=True, offload_activations=True)
    opt_on, act_on, note = factory.resolve_offload(cfg, torch.device("cpu"))
    assert (opt_on, act_on) == (False, False)
    assert "--memory.offload-optimizer and --memory.offload-activations" in note and "left off" in note
    assert factory.resolve_offload(cfg, torch.device("cuda")) == (True, True, None)
    with pytest.raises(ValueError, match="offload_optimizer offloads AdamW"):
        TrainConfig(memory=MemoryConfig(offload_optimizer=True), optim=OptimConfig(optimizer="adamw8bit"))


def test_trainer_on_cpu_notes_the_offload_options_and_trains_the_same(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastvla.training import DataConfig
    from fastvla.training.loop import Trainer

    def run(out: str, memory: MemoryConfig) -> list[float]:
        data = DataConfig(
            root=str(tiny_dataset), val_fraction=0.0, num_workers=0, cache_dir=str(tmp_path / "c")
        )
        cfg = TrainConfig(
            data=data, memory=memory, output_dir=str(tmp_path / out), steps=3, batch_size=4, log_every=1
        )
        cfg.progress, cfg.tensorboard, cfg.save_every = False, False, 0
        trainer = Trainer(cfg)
        trainer.fit()
        return [h["train/loss"] for h in trainer.history if "train/loss" in h]

    plain = run("plain", MemoryConfig())
    assert "offload" not in capsys.readouterr().out
    offloaded = run("offload", MemoryConfig(offload_optimizer=True, offload_activations=True))
    assert (
        "this run is on cpu, where everything is in host memory already; left off" in capsys.readouterr().out
    )
    assert offloaded == plain
