"""Patching a Hugging Face Llama onto the kernels: same outputs and gradients, fully reversible."""

import pytest
import torch
import transformers
from transformers.models.llama import modeling_llama as llama

from fastvla.kernels import KernelConfig, apply_kernels, kernels_enabled
from fastvla.model.presets import llama_config

from .conftest import rel_err


def _tiny_llama(device: torch.device | str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = llama_config(64, 128, 2, 4, kv_heads=2, vocab_size=100, attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg).to(device)
    with torch.no_grad():  # non-trivial norm weights, so a dropped weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_patched_model_matches_eager(device):
    model = _tiny_llama(device)
    ids = torch.randint(0, 100, (2, 7), device=device)
    ref_logits, ref_grads = _loss_and_grads(model, ids)
    with kernels_enabled(model) as patch:
        assert patch.counts == {
            "rms_norm": 5,
            "swiglu": 2,
            "rope": 1,
            "nf4": 0,
            "mlp_recompute": 0,  # trainable down_proj: swiglu_down takes the unfused path
            "lora_linear": 0,  # no PEFT adapters
        }  # 2 layers x 2 norms + final norm
        logits, grads = _loss_and_grads(model, ids)
    assert rel_err(logits, ref_logits) < 1e-5
    for g, g_ref in zip(grads, ref_grads):  # norm weights included: their dw comes from the kernel
        assert rel_err(g, g_ref) < 1e-4


def test_revert_restores_every_original():
    model = _tiny_llama()
    original_rope = llama.apply_rotary_pos_emb
    norm = model.model.norm
    patch = apply_kernels(model)
    assert "forward" in norm.__dict__ and llama.apply_rotary_pos_emb is not original_rope
    patch.revert()
    patch.revert()  # idempotent
    assert llama.apply_rotary_pos_emb is original_rope
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_nested_patches_keep_rope_until_the_last_revert():
    a, b = _tiny_llama(), _tiny_llama()
    original_rope = llama.apply_rotary_pos_emb
    with kernels_enabled(a):
        with kernels_enabled(b):
            pass
        assert llama.apply_rotary_pos_emb is not original_rope  # a still patched
    assert llama.apply_rotary_pos_emb is original_rope


def test_config_switches():
    model = _tiny_llama()
    with kernels_enabled(model, KernelConfig(enabled=False)) as patch:
        assert patch.counts == {
            "rms_norm": 0,
            "swiglu": 0,
            "rope": 0,
            "nf4": 0,
            "mlp_recompute": 0,
            "lora_linear": 0,
        }
        assert all("forward" not in m.__dict__ for m in model.modules())
    with kernels_enabled(model, KernelConfig(rms_norm=False, rope=False)) as patch:
        assert patch.counts == {
            "rms_norm": 0,
            "swiglu": 2,
            "rope": 0,
            "nf4": 0,
            "mlp_recompute": 0,
            "lora_linear": 0,
        }


def test_revert_on_error():
    model = _tiny_llama()
    original_rope = llama.apply_rotary_pos_emb
    with pytest.raises(RuntimeError, match="boom"), kernels_enabled(model):
        raise RuntimeError("boom")
    assert llama.apply_rotary_pos_emb is original_rope
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_nothing_is_patched_on_import():
    import fastvla.kernels  # noqa: F401

    model = _tiny_llama()
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert llama.apply_rotary_pos_emb.__module__ != "fastvla.kernels.patch"
