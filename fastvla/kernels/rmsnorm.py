"""Fused RMSNorm, forward and backward, in one pass over each row.

Math, for a row ``x`` of width ``N`` and a weight ``w``:

    rstd = 1 / sqrt(mean(x²) + eps)
    x̂ = x · rstd
    y = x̂ · w

Backward, with ``g = dy · w``:

    dx = rstd · (g − x̂ · mean(g · x̂))
    dw = Σ_rows dy · x̂

All arithmetic is float32; ``y`` and ``dx`` are stored in the input's dtype. Hugging Face's
``LlamaRMSNorm`` rounds ``x̂`` to the input dtype before multiplying by ``w`` and returns the dtype that
``w · x̂`` promotes to (float32 when PEFT's ``prepare_model_for_kbit_training`` has upcast the weight);
this kernel returns the input dtype, which keeps the residual stream in the compute dtype. Eager PyTorch
runs ~6 kernels and writes float32 temporaries; this is one read of ``x`` and one write of ``y``.

The backward computes ``dw`` only when the weight requires a gradient (in QLoRA it is frozen), from
per-program partial sums over a persistent grid that PyTorch then adds up.
"""

import torch

from ._triton import compute_dtype, jit, next_power_of_2, num_programs_hint, tl, use_triton

MAX_WIDTH = 65536  # one row per program must fit in registers/shared memory


@jit
def _rms_norm_fwd_kernel(X, W, Y, RSTD, stride_x, stride_y, N, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@jit
def _rms_norm_bwd_kernel(
    DY,
    X,
    W,
    RSTD,
    DX,
    DW_PARTIAL,
    stride_dy,
    stride_x,
    stride_dx,
    M,
    N,
    rows_per_program,
    BLOCK_N: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = (pid * rows_per_program).to(tl.int64)
    for i in range(0, rows_per_program):
        row = row_start + i
        # The last program may run past the end: an empty column mask there.
        row_mask = cols < tl.where(row < M, N, 0)
        x = tl.load(X + row * stride_x + cols, mask=row_mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=row_mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + tl.minimum(row, M - 1))
        x_hat = x * rstd
        g = dy * w
        c = tl.sum(g * x_hat, axis=0) / N
        dx = (g - x_hat * c) * rstd
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=row_mask)
        if COMPUTE_DW:
            dw_acc += dy * x_hat
    if COMPUTE_DW:
        tl.store(DW_PARTIAL + pid * N + cols, dw_acc, mask=mask)


def _warps(block_n: int) -> int:
    # 8 warps for a 4096-wide row (16 bytes per thread per load in bf16), as Triton's tutorials size it.
    return min(max(block_n // 512, 1), 16)


def _rms_norm_fwd(x2: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward on a 2-D ``(rows, N)`` view whose last dimension is contiguous."""
    m, n = x2.shape
    y = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x2.device)
    block_n = next_power_of_2(n)
    if m > 0:
        _rms_norm_fwd_kernel[(m,)](
            x2, weight, y, rstd, x2.stride(0), y.stride(0), n, eps, BLOCK_N=block_n, num_warps=_warps(block_n)
        )
    return y, rstd


def _rms_norm_bwd(
    dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, compute_dw: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the backward; ``dw`` comes from per-program partial sums when ``compute_dw``."""
    m, n = x2.shape
    dx = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
    programs = max(min(m, num_programs_hint(x2)), 1) if compute_dw else max(m, 1)
    rows_per_program = -(-m // programs) if m > 0 else 0
    partial = torch.empty((programs, n) if compute_dw else (1,), dtype=torch.float32, device=x2.device)
    block_n = next_power_of_2(n)
    if m > 0:
        _rms_norm_bwd_kernel[(programs,)](
            dy2,
            x2,
            weight,
            rstd,
            dx,
            partial,
            dy2.stride(0),
            x2.stride(0),
            dx.stride(0),
            m,
            n,
            rows_per_program,
            BLOCK_N=block_n,
            COMPUTE_DW=compute_dw,
            num_warps=_warps(block_n),
        )
    dw = None
    if compute_dw:
        dw = partial.sum(0).to(weight.dtype) if m > 0 else torch.zeros_like(weight)
    return dx, dw


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """``(…, N)`` → ``(rows, N)`` with a unit last stride (a view when possible)."""
    t2 = t.reshape(-1, t.shape[-1])  # (rows, N)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x2 = _as_rows(x)
        y, rstd = _rms_norm_fwd(x2, weight.contiguous(), eps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x2, weight, rstd = ctx.saved_tensors
        dx, dw = _rms_norm_bwd(_as_rows(dy), x2, weight.contiguous(), rstd, ctx.needs_input_grad[1])
        return dx.view(ctx.x_shape), dw, None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain-PyTorch RMSNorm with the kernel's numerics (float32 math, output in ``x.dtype``)."""
    xf = x.to(compute_dtype(x))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(xf.dtype)
    return y.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: ``x / sqrt(mean(x²) + eps) * weight``, fused fwd + bwd.

    Runs the Triton kernel on CUDA (and on CPU under ``TRITON_INTERPRET=1``), else the reference.

    Args:
        x: ``(..., N)`` activations, any float dtype.
        weight: ``(N,)`` scale; its gradient is computed only when it requires one.
        eps: added to the mean square before the square root.

    Returns:
        ``(..., N)`` normalised activations in ``x.dtype``.

    Example:
        >>> x = torch.randn(2, 8, 64)
        >>> rms_norm(x, torch.ones(64)).shape
        torch.Size([2, 8, 64])
    """
    if weight.shape != (x.shape[-1],):
        raise ValueError(
            f"rms_norm: weight shape {tuple(weight.shape)} does not match the last dimension of x "
            f"{tuple(x.shape)}; pass a weight of shape ({x.shape[-1]},)"
        )
    if not use_triton(x) or x.shape[-1] > MAX_WIDTH or weight.device != x.device:
        return rms_norm_reference(x, weight, eps)
    return _RMSNormFunction.apply(x, weight, eps)
