"""Fused gated-linear-unit kernels: SwiGLU, ``silu(gate) · up``, forward and backward in one pass each.

Math, elementwise, with ``σ`` the logistic sigmoid:

    y = g · σ(g) · u

Backward:

    du = dy · g · σ(g)
    dg = dy · u · σ(g) · (1 + g · (1 − σ(g)))

All arithmetic is float32; outputs are stored in the inputs' dtype. Eager PyTorch runs ``act_fn(gate)``
and the product as two kernels and keeps three tensors for backward (``g``, ``silu(g)``, ``u``); this keeps
two (``g``, ``u``) and recomputes ``σ(g)`` in the backward, which costs nothing in a memory-bound pass.
"""

import torch

from ._triton import compute_dtype, jit, tl, use_triton

BLOCK = 1024


@jit
def _swiglu_fwd_kernel(G, U, Y, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@jit
def _swiglu_bwd_kernel(DY, G, U, DG, DU, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    tl.store(DU + offs, (dy * g * sig).to(DU.dtype.element_ty), mask=mask)
    tl.store(DG + offs, (dy * u * sig * (1.0 + g * (1.0 - sig))).to(DG.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (max(-(-n // BLOCK), 1),)


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate, up = gate.contiguous(), up.contiguous()
        y = torch.empty_like(gate)
        n = gate.numel()
        if n > 0:
            _swiglu_fwd_kernel[_grid(n)](gate, up, y, n, BLOCK=BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        dy = dy.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        if n > 0:
            _swiglu_bwd_kernel[_grid(n)](dy, gate, up, dgate, dup, n, BLOCK=BLOCK, num_warps=4)
        return dgate, dup


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch ``silu(gate) * up`` with the kernel's numerics (float32 math, input dtype out)."""
    dtype = compute_dtype(gate)
    return (torch.nn.functional.silu(gate.to(dtype)) * up.to(dtype)).to(gate.dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The SwiGLU gate of Llama-style MLPs, ``silu(gate) * up``, fused forward and backward.

    Runs the Triton kernel on CUDA (and on CPU under ``TRITON_INTERPRET=1``), else the reference.

    Args:
        gate: output of ``gate_proj``, any shape and float dtype.
        up: output of ``up_proj``, same shape and dtype as ``gate``.

    Returns:
        ``silu(gate) * up`` in ``gate.dtype``.

    Example:
        >>> g, u = torch.randn(2, 8, 128), torch.randn(2, 8, 128)
        >>> swiglu(g, u).shape
        torch.Size([2, 8, 128])
    """
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"swiglu: gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} must match "
            "in shape and dtype; cast or reshape them to the same before the call"
        )
    if not use_triton(gate) or up.device != gate.device:
        return swiglu_reference(gate, up)
    return _SwiGLUFunction.apply(gate, up)
