"""SwiGLU into a (LoRA-wrapped, possibly 4-bit) ``down_proj`` without keeping the SwiGLU output for backward.

In a gated MLP, ``y = down_proj(h)`` with ``h = silu(g) · u`` (``g = gate_proj(x)``, ``u = up_proj(x)``).
With a frozen base weight ``W`` and a LoRA adapter ``(A, B)`` of rank ``r`` and scale ``s``:

    t = h Aᵀ                     (tokens × r, small)
    y = h Wᵀ + b + s · t Bᵀ      (the scale and add in the GEMM epilogue: ``lora_linear.lora_forward``)

The unfused autograd graph keeps ``g`` and ``u`` (for the SwiGLU backward) *and* ``h`` (PEFT's ``lora_A``
needs its input for ``dA``): per token ``3 × intermediate`` values. ``h`` is an elementwise function of
``g`` and ``u``, so :func:`swiglu_down` keeps only ``g``, ``u`` and ``t`` and recomputes ``h`` in the
backward (one memory-bound pass):

    dB = s · dyᵀ t        dt = s · dy B        dA = dtᵀ h
    dh = dy W + dt A      (W dequantised from NF4/FP4 for a bitsandbytes ``Linear4bit``; ``addmm_``)
    du = dh · g · σ(g)    dg = dh · u · σ(g) · (1 + g · (1 − σ(g)))

For Llama-2-7B shapes (2240 tokens, intermediate 11008, bf16) that is 49 MB per layer, 1.5 GiB over 32.
Every matmul runs in the dtype the unfused PEFT path would use (the autocast dtype under ``torch.autocast``;
else the adapter's dtype, to which PEFT casts ``h``), so outputs and gradients agree with it to rounding
(the epilogue rounds once where PEFT rounds after the multiply and after the add). The resolution of
``down_proj``, the forward and the LoRA backward are :mod:`~fastvla.kernels.lora_linear`'s. Nothing syncs
with the host, so the function can be captured in a CUDA graph.

Supported ``down_proj`` (checked on every call; anything else takes the unfused path):

- a PEFT LoRA layer (``peft.tuners.lora.Linear`` or its bitsandbytes ``Linear4bit`` variant) with exactly
  one active, unmerged adapter, no DoRA/variant, no LoRA bias, dropout ``Identity`` / ``p == 0`` / in
  eval mode, over a frozen base (``nn.Linear`` or bitsandbytes ``Linear4bit``) with an optional frozen bias;
- such a frozen base on its own.

:func:`swiglu_down_fallback_reason` says why a module is not supported. The SwiGLU runs the Triton kernels of
``glu.py`` where they can run (CUDA, or CPU under ``TRITON_INTERPRET=1``), else their PyTorch reference math.
"""

from __future__ import annotations

import torch
from torch import nn

from ._triton import compute_dtype, use_triton
from .glu import BLOCK, _grid, _swiglu_bwd_kernel, swiglu
from .lora_linear import LoraTarget, cast_via, lora_backward, lora_forward, resolve_lora


def _resolve(module: nn.Module) -> tuple[LoraTarget | None, str | None]:
    """``down_proj``'s view for the fused path (a bare frozen base is fine too), or ``(None, reason)``."""
    return resolve_lora(module, allow_bare=True)


def swiglu_down_fallback_reason(down_proj: nn.Module) -> str | None:
    """Why :func:`swiglu_down` would take the unfused path for ``down_proj``; ``None`` if it is supported.

    Args:
        down_proj: the MLP's output projection (a PEFT LoRA layer, ``nn.Linear`` or ``Linear4bit``).

    Returns:
        A one-line reason, or ``None``.
    """
    return _resolve(down_proj)[1]


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


class _SwiGLUDownFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, lora_a, lora_b, down: LoraTarget):  # lora_a/b: inputs for autograd
        gate, up = gate.contiguous(), up.contiguous()  # the backward kernel reads them flat
        h = swiglu(gate, up)
        y, t, _, dtypes = lora_forward(h, down)  # h itself is not kept: recomputed in backward
        ctx.down, ctx.dtypes = down, dtypes
        ctx.save_for_backward(gate, up, t)
        return y

    @staticmethod
    def backward(ctx, dy):
        gate, up, t = ctx.saved_tensors
        down, d = ctx.down, ctx.dtypes
        need_h = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]

        def h_lora() -> torch.Tensor:  # the adapter input as the forward's rank-r matmul saw it
            return cast_via(swiglu(gate, up), d.x_l, d.lora)  # (..., I)

        dh, d_a, d_b = lora_backward(
            dy, t, h_lora, down, d, need_h, ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        )
        dg = du = None
        if need_h:
            with torch.autocast(dy.device.type, enabled=False):
                dg, du = _swiglu_backward(dh.view(gate.shape), gate, up)
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
