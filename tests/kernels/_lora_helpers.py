"""Helpers shared by the LoRA kernel tests (test_lora_linear.py, test_lora_mlp.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import bitsandbytes as bnb
import peft
import torch
import transformers
from torch import nn

from fastvla.kernels import KernelConfig, kernels_enabled
from fastvla.model.presets import llama_config


def to_4bit(linear: nn.Linear, compute_dtype: torch.dtype, device: str = "cpu") -> nn.Module:
    """A bitsandbytes NF4 copy of ``linear`` on ``device``, guarded against CPU repacking."""
    from fastvla.model import guard_cpu_4bit

    q = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        quant_type="nf4",
    )
    q.load_state_dict(linear.state_dict())
    q = q.to(device)  # quantises
    guard_cpu_4bit(q)  # support_avx512bf16_for_cpu = False: no silent repacking on CPU
    return q


def randomize_lora_b(model: nn.Module, std: float = 0.2) -> nn.Module:
    """PEFT starts every ``lora_B`` at zero, which would hide a wrong gradient of ``lora_A``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=std)
    return model


def counting_saved(saved: dict[int, int]) -> torch.autograd.graph.saved_tensors_hooks:
    """Record every tensor autograd saves as storage address -> bytes (a tensor saved twice counts once)."""

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def peft_tiny_llama(hidden: int = 64, intermediate: int = 128) -> nn.Module:
    """A frozen 2-layer Llama with rank-4 LoRA adapters on every linear (``lora_B`` randomised)."""
    torch.manual_seed(0)
    cfg = llama_config(hidden, intermediate, 2, 4, vocab_size=100, attn_implementation="sdpa")
    llama = transformers.LlamaForCausalLM(cfg).requires_grad_(False)
    model = peft.get_peft_model(llama, peft.LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    return randomize_lora_b(model)


def fwd_bwd(
    model: nn.Module, x: torch.Tensor, config: KernelConfig, autocast: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, Any]:
    """One forward + backward of ``model(x)`` with the kernels of ``config``: the output (with its grad_fn),
    the gradients of ``x`` and of every trainable parameter, the bytes of saved activations (parameters
    excluded) and the applied patch."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    saved: dict[int, int] = {}
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with kernels_enabled(model, config) as patch:
        with ctx, counting_saved(saved):
            y = model(x)
        (y.float() * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum().backward()
    grads = {"x": x.grad} | {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    activation_bytes = sum(b for ptr, b in saved.items() if ptr not in param_ptrs)
    return y, grads, activation_bytes, patch
