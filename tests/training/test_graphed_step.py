"""The graphed update's bookkeeping on CPU (capture itself is GPU-only; see test_gpu.py).

``GraphedTrainStep(capture=False)`` runs exactly the sequence that the graphs replay: flat gradient views,
accumulation, by-hand all-reduce, clip, AdamW, zeroing. These tests pin it against a plain PyTorch loop and
against a single process at the same global batch.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fastvla.training import MemoryConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training.config import graph_incompatibility
from fastvla.training.factory import use_cuda_graphs
from fastvla.training.graphed_step import GraphCaptureError, GraphedTrainStep, _Snapshot, pad_text

from . import _graphed_toy as _toy
from ._graphed_toy import Toy, batch

ROOT = Path(__file__).resolve().parents[2]


def reference_updates(model: nn.Module, batches: list[list[dict]], clip: float) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for micro in batches:
        total = 0.0
        for b in micro:
            loss = model(**b).loss / len(micro)
            loss.backward()
            total += float(loss.detach())
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad()
        losses.append(total)
    return losses


@pytest.mark.parametrize("accum", [1, 2])
def test_eager_sequence_matches_a_plain_loop(accum: int) -> None:
    torch.manual_seed(0)
    model = Toy()
    ref = copy.deepcopy(model)
    batches = [[batch(10 * u + m) for m in range(accum)] for u in range(4)]
    ref_losses = reference_updates(ref, batches, clip=0.5)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = GraphedTrainStep(
        model, opt, batches[0][0], accum=accum, max_grad_norm=0.5, autocast_dtype=None, capture=False
    )
    losses = [float(step.update(micro)[0]) for micro in batches]
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(model.seen) == float(ref.seen) == 4 * accum
    # Gradients live in one flat buffer, zeroed after every update.
    assert len(step.flat_grads) == 1 and step.flat_grads[0].abs().sum() == 0
    assert all(p.grad.data_ptr() >= step.flat_grads[0].data_ptr() for p in model.parameters())


def test_bad_micro_batches_are_named() -> None:
    model = Toy()
    opt = torch.optim.AdamW(model.parameters())
    step = GraphedTrainStep(model, opt, batch(0), autocast_dtype=None, capture=False)
    with pytest.raises(ValueError, match="expected 1 micro-batches"):
        step.update([batch(1), batch(2)])
    with pytest.raises(ValueError, match="fixed shapes"):
        step.update([batch(1, n=4)])
    with pytest.raises(ValueError, match="keys"):
        step.update([{k: v for k, v in batch(1).items() if k != "state"}])


def test_capture_needs_cuda_and_a_capturable_setup() -> None:
    model = Toy()
    with pytest.raises(GraphCaptureError, match="CUDA device"):
        GraphedTrainStep(model, torch.optim.AdamW(model.parameters()), batch(0))
    with pytest.raises(GraphCaptureError, match=r"optim\.optimizer adamw"):
        GraphedTrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), batch(0), capture=False)
    fp16 = GraphedTrainStep(
        model, torch.optim.AdamW(model.parameters()), batch(0), autocast_dtype=torch.float16, capture=False
    )
    assert fp16.scaler is not None and fp16.scaler.get_scale() == 2.0**16  # fp16 brings its loss scaling


def test_snapshot_restores_weights_buffers_and_fresh_optimizer_state() -> None:
    torch.manual_seed(0)
    model = Toy()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = [t.clone() for t in [*params, *model.buffers()]]
    snap = _Snapshot(model, opt, params)
    for _ in range(2):  # what a warm-up does: real steps that create optimiser state
        model(**batch(3)).loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(params[0], before[0]) and float(model.seen) == 2
    snap.restore()
    for live, saved in zip([*params, *model.buffers()], before, strict=True):
        assert torch.equal(live, saved)
    for state in opt.state.values():  # as if AdamW had never stepped
        assert float(state["step"]) == 0
        assert state["exp_avg"].abs().sum() == 0 and state["exp_avg_sq"].abs().sum() == 0


def test_pad_text_pads_ids_and_mask_and_refuses_overflow() -> None:
    b = batch(0, n=2, tokens=3)
    out = pad_text(b, 6, pad_id=7)
    assert out["input_ids"].shape == (2, 6) and (out["input_ids"][:, 3:] == 7).all()
    assert out["attention_mask"][:, :3].all() and not out["attention_mask"][:, 3:].any()
    assert out["state"] is b["state"] and b["input_ids"].shape == (2, 3)  # input untouched
    with pytest.raises(ValueError, match="max_instruction_tokens"):
        pad_text(b, 2)


def test_padding_does_not_change_the_fastvla_loss() -> None:
    from fastvla.model import FastVLAModel, FastVLAProcessor

    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", image_size=32).eval()
    cfg = model.config
    inputs = {
        "pixel_values": torch.rand(2, len(cfg.cameras), 3, 32, 32),
        "input_ids": torch.randint(3, 60, (2, 5)),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "state": torch.randn(2, cfg.state_dim),
        "actions": torch.randn(2, cfg.chunk_size, cfg.action_dim),
    }
    processor = FastVLAProcessor.from_preset("tiny", config=model.config)
    to_max = processor.pad_instructions(inputs)
    assert to_max["input_ids"].shape == (2, processor.max_instruction_tokens)
    with torch.no_grad():
        loss = model(**inputs).loss
        padded = model(**pad_text(inputs, 12)).loss
        padded_to_max = model(**to_max).loss
    torch.testing.assert_close(padded, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded_to_max, loss, rtol=1e-5, atol=1e-6)


def test_config_says_why_a_run_cannot_be_graphed() -> None:
    assert graph_incompatibility(TrainConfig()) is None
    assert "adamw" in graph_incompatibility(TrainConfig(optim=OptimConfig(optimizer="adamw8bit")))
    assert graph_incompatibility(TrainConfig(mixed_precision="fp16")) is None  # loss scaling is captured
    offload = TrainConfig(memory=MemoryConfig(offload_activations=True))
    assert "offload-activations" in graph_incompatibility(offload)
    assert graph_incompatibility(TrainConfig(memory=MemoryConfig(offload_optimizer=True))) is None
    assert "cpu" in graph_incompatibility(TrainConfig(device="cpu"))
    lora_gc = ModelConfig(quantization="4bit", gradient_checkpointing=True, lora_dropout=0.1)
    assert "lora-dropout 0" in graph_incompatibility(TrainConfig(model=lora_gc))
    with pytest.raises(ValueError, match=r"--cuda-graphs on: .*adamw"):
        TrainConfig(cuda_graphs="on", optim=OptimConfig(optimizer="paged_adamw8bit"))
    # auto quietly trains eagerly where graphs cannot run; on names the problem.
    assert use_cuda_graphs(TrainConfig(), torch.device("cpu")) == (False, False)
    assert use_cuda_graphs(TrainConfig(cuda_graphs="off"), torch.device("cuda")) == (False, False)
    with pytest.raises(ValueError, match="CUDA GPU"):
        use_cuda_graphs(TrainConfig(cuda_graphs="on"), torch.device("cpu"))


# ------------------------------------------------------------------------------- by-hand all-reduce
def test_two_processes_equal_one_process_at_the_same_global_batch(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, str(Path(_toy.__file__)), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    torch.manual_seed(100)  # rank 0's init
    model = Toy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = GraphedTrainStep(model, opt, batch(0, n=8), max_grad_norm=1.0, autocast_dtype=None, capture=False)
    for u in range(3):
        step.update([batch(u, n=8)])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for p, q in zip(got, model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


def test_kernels_option_resolves_per_device() -> None:
    from fastvla.training.factory import use_kernels

    assert use_kernels(TrainConfig(), torch.device("cpu")) is False  # auto: CUDA only
    assert use_kernels(TrainConfig(), torch.device("cuda")) is True
    assert use_kernels(TrainConfig(model=ModelConfig(kernels="off")), torch.device("cuda")) is False
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        use_kernels(TrainConfig(model=ModelConfig(kernels="on")), torch.device("cpu"))
    with pytest.raises(ValueError, match="gradient_checkpointing_layers"):
        ModelConfig(gradient_checkpointing_layers=-1)


def test_a_second_trainer_may_use_other_precision_in_the_same_process() -> None:
    from fastvla.training import factory

    factory.make_accelerator(TrainConfig(device="cpu", mixed_precision="no"))
    acc = factory.make_accelerator(TrainConfig(device="cpu", mixed_precision="bf16"))  # used to raise
    assert acc.mixed_precision == "bf16"
    assert factory.make_accelerator(TrainConfig(device="cpu", mixed_precision="no")).mixed_precision == "no"
