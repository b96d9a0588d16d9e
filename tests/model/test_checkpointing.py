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


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast-bf16"])
def test_combines_with_mlp_recompute_on_nf4(tmp_path, autocast):
    """The 7B recipe in miniature: NF4 + LoRA, partial checkpointing x MLP recomputation."""
    from fastvla.kernels import KernelConfig, kernels_enabled
    from fastvla.model import bnb_config

    torch.manual_seed(0)
    FastVLAModel.from_preset("tiny").save_pretrained(tmp_path)
    compute = torch.bfloat16 if autocast else torch.float32
    model = FastVLAModel.from_pretrained(tmp_path, quantization_config=bnb_config(4, compute_dtype=compute))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CKPT_KWARGS)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, target_vision=False).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    inputs = _inputs()
    results = {}
    for n in (0, 1):
        set_checkpointed_layers(model, n)
        for recompute in (False, True):
            with kernels_enabled(model, KernelConfig(mlp_recompute=recompute)) as patch:
                assert patch.counts["mlp_recompute"] == 2 * recompute
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    results[n, recompute] = _step(model, inputs)
    nbytes = {key: b for key, (b, _) in results.items()}
    assert nbytes[1, True] < nbytes[1, False] < nbytes[0, False] and nbytes[1, True] < nbytes[0, True]
    per_layer = nbytes[1, False] - nbytes[1, True]  # only the one uncheckpointed layer saves activations
    assert per_layer > 0 and nbytes[0, False] - nbytes[0, True] == 2 * per_layer
    # fp32 sums of the MLP input gradient accumulate in another order (1-ulp noise); under autocast a
    # later bf16 rounding can turn that into one bf16 ulp, amplified in the near-cancelling FiLM gradients.
    # The 1e-3 floor covers gradients that are zero up to rounding (a key bias under softmax).
    tol = 2e-2 if autocast else 1e-4
    reference = results[0, False][1]
    for _, grads in results.values():
        assert grads.keys() == reference.keys()
        for name, grad in reference.items():
            err = ((grads[name] - grad).norm() / grad.norm().clamp_min(1e-3)).item()
            assert err < tol, (name, err)
