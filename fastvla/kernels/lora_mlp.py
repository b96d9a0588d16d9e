"""SwiGLU into a (LoRA-wrapped, possibly 4-bit) ``down_proj`` without keeping the SwiGLU output for backward.

In a gated MLP, ``y = down_proj(h)`` with ``h = silu(g) · u`` (``g = gate_proj(x)``, ``u = up_proj(x)``).
With a frozen base weight ``W`` and a LoRA adapter ``(A, B)`` of rank ``r`` and scale ``s``:

    t = h Aᵀ                     (tokens × r, small)
    y = h Wᵀ + b + s · t Bᵀ

The unfused autograd graph keeps ``g`` and ``u`` (for the SwiGLU backward) *and* ``h`` (PEFT's ``lora_A``
needs its input for ``dA``): per token ``3 × intermediate`` values. ``h`` is an elementwise function of
``g`` and ``u``, so :func:`swiglu_down` keeps only ``g``, ``u`` and ``t`` and recomputes ``h`` in the
backward (one memory-bound pass):

    dB = s · dyᵀ t        dt = s · dy B        dA = dtᵀ h
    dh = dy W + dt A      (W dequantised from NF4/FP4 for a bitsandbytes ``Linear4bit``)
    du = dh · g · σ(g)    dg = dh · u · σ(g) · (1 + g · (1 − σ(g)))

For Llama-2-7B shapes (2240 tokens, intermediate 11008, bf16) that is 49 MB per layer, 1.5 GiB over 32.
Every matmul runs in the dtype the unfused PEFT path would use (the autocast dtype under ``torch.autocast``;
else the adapter's dtype, to which PEFT casts ``h``), so forward outputs are bit-identical and gradients
agree to rounding. Nothing syncs with the host, so the function can be captured in a CUDA graph.

Supported ``down_proj`` (checked on every call; anything else takes the unfused path):

- a PEFT LoRA layer (``peft.tuners.lora.Linear`` or its bitsandbytes ``Linear4bit`` variant) with exactly
  one active, unmerged adapter, no DoRA/variant, no LoRA bias, dropout ``Identity`` / ``p == 0`` / in
  eval mode, over a frozen base (``nn.Linear`` or bitsandbytes ``Linear4bit``) with an optional frozen bias;
- such a frozen base on its own.

:func:`swiglu_down_fallback_reason` says why a module is not supported. The SwiGLU runs the Triton kernels of
``glu.py`` where they can run (CUDA, or CPU under ``TRITON_INTERPRET=1``), else their PyTorch reference math.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._triton import compute_dtype, use_triton
from .glu import BLOCK, _grid, _swiglu_bwd_kernel, swiglu


@dataclass(frozen=True)
class _Down:
    """What the autograd Function needs to know about one ``down_proj`` call (resolved per call)."""

    base: nn.Module
    is_bnb: bool  # base is a bitsandbytes Linear4bit
    peft_bnb: bool  # PEFT's bitsandbytes LoRA layer (its own dtype rules under autocast)
    cast_input: bool  # PEFT casts the adapter input to lora_A's dtype
    lora_a: torch.Tensor | None
    lora_b: torch.Tensor | None
    scaling: float


def _bnb() -> Any:
    return sys.modules.get("bitsandbytes")  # never import it just to look: nothing is 4-bit without it


def _is_bnb_linear4bit(module: nn.Module) -> bool:
    bnb = _bnb()
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit)


def _has_hooks(*modules: nn.Module) -> bool:
    """Hooks or a replaced instance ``forward`` (accelerate's device hooks) that calling around would skip."""
    for m in modules:
        own = m.__dict__.get("forward")
        if m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook"):
            return True
        if own is not None and not getattr(own, "_fastvla_kernel", False):  # ours: nf4 inference only
            return True
    return False


def _base_reason(base: nn.Module) -> str | None:
    if _is_bnb_linear4bit(base):
        state = getattr(base.weight, "quant_state", None)
        if state is None:
            return "bitsandbytes Linear4bit without a quant_state (not quantised yet)"
        if getattr(state, "packing_format_for_cpu", False):
            return "Linear4bit weight repacked for CPU inference (see fastvla.model.guard_cpu_4bit)"
        if base.weight.device.type == "cpu" and base.support_avx512bf16_for_cpu and not base.training:
            return "Linear4bit in eval mode on CPU without guard_cpu_4bit (bitsandbytes would repack it)"
    elif type(base) is not nn.Linear:
        return f"base layer {type(base).__name__} is neither nn.Linear nor bitsandbytes Linear4bit"
    if base.weight.requires_grad:
        return "base weight is trainable (only frozen bases are supported)"
    if base.bias is not None and base.bias.requires_grad:
        return "base bias is trainable (only frozen biases are supported)"
    return None


def _peft_classes() -> tuple[type, ...]:
    """PEFT's LoRA Linear classes, if PEFT is imported: (plain, bitsandbytes 4-bit or None)."""
    if "peft" not in sys.modules:
        return ()
    from peft.tuners.lora import Linear as LoraLinear

    try:
        from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
    except ImportError:  # peft without bitsandbytes
        LoraLinear4bit = None
    return LoraLinear, LoraLinear4bit


def _resolve(module: nn.Module) -> tuple[_Down | None, str | None]:
    """The fused path's view of ``module``, or ``(None, reason)`` when it must take the unfused path."""
    if _has_hooks(module):
        return None, "down_proj has forward hooks or a replaced forward"
    peft = _peft_classes()
    is_peft = bool(peft) and isinstance(module, tuple(c for c in peft if c is not None))
    if not is_peft:
        reason = _base_reason(module)
        if reason is None and type(module).__module__.startswith("peft."):
            reason = f"PEFT layer {type(module).__name__} is not a LoRA Linear"
        if reason is not None:
            return None, reason
        return _Down(module, _is_bnb_linear4bit(module), False, False, None, None, 1.0), None
    if module.merged:
        return None, "LoRA adapter is merged into the base weight"
    if module.disable_adapters:
        return None, "adapters are disabled"
    active = [name for name in module.active_adapters if name in module.lora_A]
    if len(active) != 1:
        return None, f"{len(active)} active LoRA adapters ({active}); exactly one is supported"
    name = active[0]
    if name in module.lora_variant or module.use_dora.get(name, False):
        return None, f"adapter '{name}' is a LoRA variant (DoRA, …)"
    lora_a, lora_b, dropout = module.lora_A[name], module.lora_B[name], module.lora_dropout[name]
    if type(lora_a) is not nn.Linear or type(lora_b) is not nn.Linear:
        return None, "lora_A/lora_B are not nn.Linear"
    if lora_a.bias is not None or lora_b.bias is not None:
        return None, "LoRA bias (lora_bias=True) is not supported"
    if lora_a.weight.dtype != lora_b.weight.dtype:
        return None, f"lora_A {lora_a.weight.dtype} and lora_B {lora_b.weight.dtype} dtypes differ"
    if not (
        isinstance(dropout, nn.Identity)
        or (type(dropout) is nn.Dropout and (dropout.p == 0 or not dropout.training))
    ):
        return None, f"LoRA dropout {dropout!r} is active (use lora_dropout=0 or eval mode)"
    base = module.get_base_layer()
    if _has_hooks(base, lora_a, lora_b, dropout):
        return None, "base or adapter layers have forward hooks or a replaced forward"
    reason = _base_reason(base)
    if reason is not None:
        return None, reason
    down = _Down(
        base=base,
        is_bnb=_is_bnb_linear4bit(base),
        peft_bnb=peft[1] is not None and isinstance(module, peft[1]),
        cast_input=getattr(module, "cast_input_dtype_enabled", True),
        lora_a=lora_a.weight,
        lora_b=lora_b.weight,
        scaling=float(module.scaling[name]),
    )
    return down, None


def swiglu_down_fallback_reason(down_proj: nn.Module) -> str | None:
    """Why :func:`swiglu_down` would take the unfused path for ``down_proj``; ``None`` if it is supported.

    Args:
        down_proj: the MLP's output projection (a PEFT LoRA layer, ``nn.Linear`` or ``Linear4bit``).

    Returns:
        A one-line reason, or ``None``.
    """
    return _resolve(down_proj)[1]


# ------------------------------------------------------------------------------------------ forward


def _down_forward(h: torch.Tensor, down: _Down) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``down_proj(h)`` with PEFT's exact op sequence (autocast applies), plus ``t = lora_A(h)``."""
    if down.is_bnb:
        base_out = type(down.base).forward(down.base, h)  # class forward: no instance patches (nf4 inference)
        mm_dtype = down.base.compute_dtype or h.dtype
    else:
        base_out = F.linear(h, down.base.weight, down.base.bias)
        mm_dtype = base_out.dtype  # autocast dtype, or the weight's
    info: dict[str, Any] = {"h": h.dtype, "base_mm": mm_dtype, "base_out": base_out.dtype}
    if down.lora_a is None:
        return base_out, None, info
    autocast = torch.is_autocast_enabled(h.device.type)
    x_l = h
    if down.cast_input and not (down.peft_bnb and autocast):
        x_l = h.to(down.lora_a.dtype)
    t = F.linear(x_l, down.lora_a)  # (..., r)
    out = F.linear(t, down.lora_b) * down.scaling  # (..., out_features)
    if down.peft_bnb:
        if not autocast:
            out = out.to(base_out.dtype)
        y = base_out + out
    else:
        y = (base_out + out).to(base_out.dtype)
    info["x_l"] = x_l.dtype
    return y, t, info


def _swiglu_backward(dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dg, du)`` of ``h = silu(g) · u``: the Triton kernel where it runs, else the same math in PyTorch."""
    if use_triton(g):
        dh, dg, du = dh.contiguous(), torch.empty_like(g), torch.empty_like(u)
        n = g.numel()
        if n > 0:
            _swiglu_bwd_kernel[_grid(n)](dh, g, u, dg, du, n, BLOCK=BLOCK, num_warps=4)
        return dg, du
    dtype = compute_dtype(g)
    gf, uf, dhf = g.to(dtype), u.to(dtype), dh.to(dtype)
    sig = torch.sigmoid(gf)
    du = (dhf * gf * sig).to(u.dtype)
    dg = (dhf * uf * (sig * (1 + gf * (1 - sig)))).to(g.dtype)
    return dg, du


def _cast_via(x: torch.Tensor, mid: torch.dtype, out: torch.dtype) -> torch.Tensor:
    """``x.to(mid).to(out)`` without the copies when the round trip is exact (``mid`` holds ``x.dtype``)."""
    if x.dtype == out and torch.promote_types(x.dtype, mid) == mid:
        return x
    return x.to(mid).to(out)


def _dequantized(base: nn.Module) -> torch.Tensor:
    """The base weight (out_features, in_features) in its stored float dtype."""
    if _is_bnb_linear4bit(base):
        weight = base.weight
        return _bnb().functional.dequantize_4bit(weight.view(-1, 1), weight.quant_state)
    return base.weight


class _SwiGLUDownFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, lora_a, lora_b, down: _Down):  # lora_a/lora_b: inputs so autograd sees them
        gate, up = gate.contiguous(), up.contiguous()  # the backward kernel reads them flat
        h = swiglu(gate, up)
        y, t, info = _down_forward(h, down)
        ctx.down, ctx.info = down, info
        ctx.save_for_backward(gate, up, t)
        return y

    @staticmethod
    def backward(ctx, dy):
        gate, up, t = ctx.saved_tensors
        down, info = ctx.down, ctx.info
        need_h = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        dh = d_a = d_b = None
        with torch.autocast(dy.device.type, enabled=False):
            dy2 = dy.reshape(-1, dy.shape[-1])  # (tokens, out)
            if need_h:
                mm = info["base_mm"]
                # base_out = (h -> mm) @ Wᵀ -> base_out dtype; the gradient goes back through both casts
                dh = (dy2.to(info["base_out"]).to(mm) @ _dequantized(down.base).to(mm)).to(info["h"])
            if t is not None:
                lora_a, lora_b = down.lora_a, down.lora_b
                ct = t.dtype  # the adapter matmuls' dtype (autocast's, or lora_A's)
                t2 = t.reshape(-1, t.shape[-1])  # (tokens, r)
                dyl = dy2.to(ct) * down.scaling  # grad of (t Bᵀ) · s
                if ctx.needs_input_grad[3]:
                    d_b = (dyl.t() @ t2).to(lora_b.dtype)  # (out, r)
                dt = dyl @ lora_b.to(ct)  # (tokens, r)
                if ctx.needs_input_grad[2]:
                    h = swiglu(gate, up).reshape(-1, gate.shape[-1])  # recomputed, (tokens, I)
                    d_a = (dt.t() @ _cast_via(h, info["x_l"], ct)).to(lora_a.dtype)  # (r, I)
                    del h
                if need_h:
                    dh = dh + _cast_via(dt @ lora_a.to(ct), info["x_l"], info["h"])  # (tokens, I)
            dg = du = None
            if need_h:
                dg, du = _swiglu_backward(dh.reshape(gate.shape), gate, up)
        return dg, du, d_a, d_b, None


def swiglu_down(gate: torch.Tensor, up: torch.Tensor, down_proj: nn.Module) -> torch.Tensor:
    """``down_proj(silu(gate) * up)`` that recomputes the SwiGLU output in backward instead of saving it.

    Falls back to ``down_proj(swiglu(gate, up))`` when nothing needs gradients or ``down_proj`` is not
    supported (see the module docstring and :func:`swiglu_down_fallback_reason`).

    Args:
        gate: output of ``gate_proj``, shape ``(..., intermediate)``.
        up: output of ``up_proj``, same shape and dtype as ``gate``.
        down_proj: the MLP's output projection.

    Returns:
        The MLP output, in the dtype the unfused path returns.

    Example:
        >>> down = nn.Linear(128, 64, bias=False).requires_grad_(False)
        >>> g = torch.randn(2, 8, 128, requires_grad=True)
        >>> swiglu_down(g, torch.randn(2, 8, 128), down).shape
        torch.Size([2, 8, 64])
    """
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"swiglu_down: gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} must "
            "match in shape and dtype; cast or reshape them to the same before the call"
        )
    down, _ = _resolve(down_proj)
    params = () if down is None or down.lora_a is None else (down.lora_a, down.lora_b)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (gate, up, *params))
    if down is None or not needs_grad:
        return down_proj(swiglu(gate, up))
    return _SwiGLUDownFunction.apply(gate, up, down.lora_a, down.lora_b, down)
