"""GPU checks of the small-GPU options: optimizer-state and activation CPU offload, fp16 + loss scaling
captured in CUDA graphs (the T4 path). CUDA only; the CPU tests check the arithmetic."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from fastvla.training import DataConfig, MemoryConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training import checkpoint as ckpt
from fastvla.training.graphed_step import GraphedTrainStep
from fastvla.training.loop import Trainer
from fastvla.training.offload import CPUOffloadAdamW, activation_offload

from ._graphed_toy import Toy, batch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cuda(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cuda() for k, v in b.items()}


def test_offloaded_adamw_frees_the_state_and_follows_adamw() -> None:
    torch.manual_seed(0)
    width = 1024  # 1M-parameter layers, so the freed state is visible next to allocator noise
    a = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, 1)).cuda()
    b = copy.deepcopy(a)
    reference, offloaded = (
        torch.optim.AdamW(a.parameters(), lr=1e-3),
        CPUOffloadAdamW(b.parameters(), lr=1e-3),
    )
    x = torch.randn(64, width, device="cuda")
    used = []
    for model, opt in ((a, reference), (b, offloaded)):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        for _ in range(3):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        used.append(torch.cuda.memory_allocated() - start)
    n = sum(p.numel() for p in a.parameters())
    assert used[0] - used[1] >= 0.9 * 8 * n  # the two fp32 moments stayed on the host
    assert offloaded.state_device() == "cpu"
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_activation_offload_lowers_the_peak_and_keeps_gradients() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        *[torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.GELU()) for _ in range(8)]
    )
    model = model.cuda()
    x = torch.randn(512, 2048, device="cuda")
    peaks, grads = [], []
    for offload in (False, True):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with (
            activation_offload(torch.device("cuda"))
            if offload
            else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        ):
            loss = model(x).square().mean()
        peaks.append(torch.cuda.max_memory_allocated() - base)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert peaks[1] < 0.5 * peaks[0], peaks
    for g, h in zip(*grads, strict=True):
        torch.testing.assert_close(g, h)


def test_fp16_update_with_loss_scaling_is_captured_and_skips_overflow() -> None:
    """Captured and eager fp16 updates agree; an inf loss skips the update inside the graph (no sync)."""
    torch.manual_seed(0)
    models = [Toy().cuda(), None]
    models[1] = copy.deepcopy(models[0])
    batches = [_cuda(batch(u)) for u in range(6)]
    batches[3]["state"][0, 0] = float("inf")  # overflow: the update must be skipped, the scale backed off
    results = []
    for model, capture in zip(models, (True, False), strict=True):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cuda", init_scale=256.0)  # no overflow but the one planted
        step = GraphedTrainStep(
            model, opt, batches[0], autocast_dtype=torch.float16, capture=capture, scaler=scaler
        )
        assert step.captured is capture and step.scaler is not None
        scales, moved = [], []
        for b in batches:
            before = [p.detach().clone() for p in model.parameters()]
            step.update([b])
            moved.append(any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)))
            scales.append(step.scaler.get_scale())
        results.append((scales, moved, float(step.skipped_updates)))
    assert results[0] == results[1]
    scales, moved, skipped = results[0]
    assert moved[3] is False and all(moved[i] for i in (0, 1, 2, 4, 5))
    assert scales[3] == scales[2] / 2 and skipped == 1.0


def _config(dataset_root: Path, frame_cache: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(root=str(dataset_root), cache_dir=str(frame_cache), val_episodes=(2,)),
        model=ModelConfig(quantization="4bit", gradient_checkpointing=True, lora_dropout=0.0),
        optim=OptimConfig(optimizer="adamw", warmup_steps=1),
        output_dir=str(out),
        batch_size=8,
        log_every=2,
        save_every=3,
        val_every=3,
        device="cuda",
        progress=False,
        **kw,
    )


def test_fastvla_train_fp16_graphs_with_offloaded_optimizer_trains_and_resumes(
    dataset_root: Path, frame_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kw = {"mixed_precision": "fp16", "cuda_graphs": "on", "memory": MemoryConfig(offload_optimizer=True)}
    trainer = Trainer(_config(dataset_root, frame_cache, tmp_path, steps=3, **kw))
    trainer.fit()
    out = capsys.readouterr().out
    assert "fp16 loss scaling, then AdamW on the CPU" in out
    assert trainer.graphed.scaler is trainer.accelerator.scaler
    losses = [h["train/loss"] for h in trainer.history if "train/loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert (ckpt.checkpoint_path(tmp_path, 3) / "scaler.pt").is_file()
    resumed = Trainer(_config(dataset_root, frame_cache, tmp_path, steps=6, resume=True, **kw))
    assert resumed.step == 3
    resumed.fit()


def test_fastvla_train_with_activation_offload_runs_eagerly(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    memory = MemoryConfig(offload_activations=True)
    trainer = Trainer(
        _config(dataset_root, frame_cache, tmp_path, steps=2, memory=memory, mixed_precision="bf16")
    )
    assert trainer.offload_activations and not trainer.graphs  # auto: not capturable, so eager
    trainer.fit()
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in trainer.history if "train/loss" in h)
