"""Selective gradient checkpointing: fewer saved activations with more layers, identical gradients."""

from __future__ import annotations

import pytest
import torch

from fastvla.model import FastVLAModel, FastVLAProcessor, add_lora, decoder_layers, set_checkpointed_layers

STATS = {
    "observation.state": {"mean": [0.0] * 8, "std": [1.0] * 8},
    "action": {"min": [-1.0] * 7, "max": [1.0] * 7},
}
CKPT_KWARGS = {"use_reentrant": False, "preserve_rng_state": False}  # the CUDA-graph-safe settings


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {
        f"observation.images.{c}": torch.randint(0, 256, (2, 3, 64, 64), generator=g).to(torch.uint8)
        for c in ("front", "wrist")
    }
    batch["observation.state"] = torch.randn(2, 8, generator=g)
    batch["task"] = ["pick up the red cube", "push the blue block to the left"]
    batch["action"] = torch.rand(2, 8, 7, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(2, 8, dtype=torch.bool)
    return FastVLAProcessor.from_preset("tiny", stats=STATS)(batch)


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CKPT_KWARGS)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, target_vision=False)
    with torch.no_grad():  # PEFT starts lora_B at zero, which would hide wrong lora_A gradients
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return model.train()


def _step(model, inputs) -> tuple[int, dict[str, torch.Tensor]]:
    """Saved-activation bytes (outside checkpointed regions) and gradients of one forward + backward."""
    model.zero_grad(set_to_none=True)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**inputs).loss
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sum(b for ptr, b in saved.items() if ptr not in params), grads


def test_fewer_saved_bytes_and_identical_gradients(lora_model):
    inputs = _inputs()
    layers = decoder_layers(lora_model)  # through the PEFT wrapper
    assert len(layers) == 2
    results = {}
    for n in (0, 1, None):
        assert set_checkpointed_layers(lora_model, n) == (2 if n is None else n)
        assert [layer.gradient_checkpointing for layer in layers] == [
            i < (n if n is not None else 2) for i in range(2)
        ]
        results[n] = _step(lora_model, inputs)
    (b0, g0), (b1, g1), (ball, gall) = results[0], results[1], results[None]
    assert ball < b1 < b0, (b0, b1, ball)
    assert any("lora_A" in name for name in g0) and g0.keys() == g1.keys() == gall.keys()
    for name, grad in g0.items():
        torch.testing.assert_close(g1[name], grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(gall[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("n", [-1, 3, 1.5, True])
def test_bad_layer_counts(lora_model, n):
    with pytest.raises(ValueError, match=r"outside \[0, 2\]"):
        set_checkpointed_layers(lora_model, n)


def test_needs_checkpointing_enabled_first():
    model = FastVLAModel.from_preset("tiny")
    assert set_checkpointed_layers(model, 0) == 0  # turning it off needs nothing
    with pytest.raises(ValueError, match="gradient_checkpointing_enable"):
        set_checkpointed_layers(model, 1)
    with pytest.raises(ValueError, match="no GradientCheckpointingLayer"):
        set_checkpointed_layers(torch.nn.Linear(2, 2), None)
