"""CUDA-graph replay of the policy forward (CUDA only; run through the device tool)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvla.model import FastVLAModel, FastVLAProcessor
from fastvla.policies import FastVLAPolicy
from fastvla.policies.graphed_forward import GraphedForward

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _obs(cams: list[str], size: int, batch: int | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return {
        "pixels": {c: rng.integers(0, 256, (*lead, size, size, 3), dtype=np.uint8) for c in cams},
        "agent_pos": rng.standard_normal((*lead, 8)).astype(np.float32),
    }


def test_policy_replays_graphs_per_batch_size_and_matches_eager() -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", image_size=64, state_dim=8)
    processor = FastVLAProcessor.from_preset("tiny", config=model.config)
    cams = list(model.config.cameras)
    graphed = FastVLAPolicy(model, processor, device="cuda", cuda_graphs=True)
    eager = FastVLAPolicy(model, processor, device="cuda", cuda_graphs=False)
    for batch in (None, 3, None):
        obs = _obs(cams, 64, batch, seed=batch or 0)
        a = graphed.predict_action_chunk(obs, task="pick up the red cube")
        b = eager.predict_action_chunk(obs, task="pick up the red cube")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert graphed._graphed.num_graphs == 2  # batch 1 and batch 3


def test_graphed_forward_raises_on_host_sync_and_policy_auto_falls_back() -> None:
    def syncing(x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum().item())  # reads a value on the host: not capturable

    with pytest.raises(Exception):  # noqa: B017 - torch raises its own capture error types
        GraphedForward(syncing)(x=torch.ones(4, device="cuda"))
    assert GraphedForward(lambda x: x * 2)(x=torch.ones(4, device="cuda")).sum().item() == 8


def test_4bit_policy_with_fused_kernels_matches_bitsandbytes(tmp_path) -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny-vit", image_size=64, state_dim=8)
    processor = FastVLAProcessor.from_preset("tiny-vit", config=model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    cams = list(model.config.cameras)
    fused = FastVLAPolicy.from_pretrained(tmp_path, load_in_4bit=True, device="cuda", kernels=True)
    plain = FastVLAPolicy.from_pretrained(tmp_path, load_in_4bit=True, device="cuda", kernels=False)
    assert fused.kernel_patch.counts["nf4"] > 0
    obs = _obs(cams, 64, 2, seed=1)
    a = fused.predict_action_chunk(obs, task="push the blue cube")
    b = plain.predict_action_chunk(obs, task="push the blue cube")
    assert np.abs(a - b).max() <= 0.05 * max(np.abs(b).max(), 1e-3)
