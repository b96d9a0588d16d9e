"""Fused rotary position embedding (RoPE) for queries and keys, the Hugging Face "rotate half" layout.

Math, for a head vector ``x = [x₁, x₂]`` (two halves of ``D/2``) and per-position ``cos = [c₁, c₂]``,
``sin = [s₁, s₂]`` (Hugging Face repeats the frequencies, so ``c₁ = c₂`` in practice; the kernel does not
assume it):

    y₁ = x₁ · c₁ − x₂ · s₁
    y₂ = x₂ · c₂ + x₁ · s₂

which is ``x · cos + rotate_half(x) · sin``. The map is linear in ``x`` with a 2×2 block per frequency
``[[c₁, −s₁], [s₂, c₂]]``, so the backward applies its transpose:

    dx₁ = dy₁ · c₁ + dy₂ · s₂
    dx₂ = dy₂ · c₂ − dy₁ · s₁

Float32 arithmetic, output in ``x``'s dtype. Eager PyTorch runs ~6 kernels per tensor (two slices, a
negation, a concatenation, two products and a sum) and materialises ``rotate_half(x)``; this is one read and
one write. No gradient flows to ``cos``/``sin`` (they come from a buffer); the public function falls back
to the reference when they require one.
"""

import torch

from ._triton import compute_dtype, jit, next_power_of_2, tl, use_triton


@jit
def _rope_kernel(
    X,
    COS,
    SIN,
    Y,
    H,
    S,
    sx_b,
    sx_h,
    sx_s,
    sy_b,
    sy_h,
    sy_s,
    sc_b,
    sc_s,
    ss_b,
    ss_s,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BACKWARD: tl.constexpr,
):
    # One program per (batch, position, block of heads): cos/sin are loaded once for all its heads.
    pid_bs = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1)
    b = pid_bs // S
    s = pid_bs % S
    heads = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HALF
    mask = (heads[:, None] < H) & d_mask[None, :]

    cos_row = COS + b * sc_b + s * sc_s
    sin_row = SIN + b * ss_b + s * ss_s
    c1 = tl.load(cos_row + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos_row + HALF + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin_row + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin_row + HALF + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]

    x_ptr = X + b * sx_b + s * sx_s + heads[:, None].to(tl.int64) * sx_h + d[None, :]
    y_ptr = Y + b * sy_b + s * sy_s + heads[:, None].to(tl.int64) * sy_h + d[None, :]
    x1 = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:
        y1 = x1 * c1 + x2 * s2
        y2 = x2 * c2 - x1 * s1
    else:
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
    tl.store(y_ptr, y1.to(Y.dtype.element_ty), mask=mask)
    tl.store(y_ptr + HALF, y2.to(Y.dtype.element_ty), mask=mask)


def _rope_launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, S, D)`` (any strides, unit last stride) by ``cos``/``sin`` ``(B, S, D)``."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    bsz, heads, seq, dim = x.shape
    y = torch.empty_like(x)  # keeps x's (B, S, H, D)-transposed layout when it has one
    block_h = min(next_power_of_2(heads), 16)
    if x.numel() > 0:
        grid = (bsz * seq, -(-heads // block_h))
        _rope_kernel[grid](
            x,
            cos,
            sin,
            y,
            heads,
            seq,
            x.stride(0),
            x.stride(1),
            x.stride(2),
            y.stride(0),
            y.stride(1),
            y.stride(2),
            cos.stride(0),
            cos.stride(1),
            sin.stride(0),
            sin.stride(1),
            HALF=dim // 2,
            BLOCK_H=block_h,
            BLOCK_D=next_power_of_2(dim // 2),
            BACKWARD=backward,
            num_warps=4,
        )
    return y


class _RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rope_launch(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rope_launch(dy, cos, sin, backward=True), None, None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x₁, x₂] → [−x₂, x₁]`` over the last dimension (Hugging Face's helper)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope_reference(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch RoPE with the kernel's numerics (float32 math, output in the inputs' dtypes)."""
    dtype = compute_dtype(q)
    c = cos.unsqueeze(unsqueeze_dim).to(dtype)
    s = sin.unsqueeze(unsqueeze_dim).to(dtype)
    q_out = q.to(dtype) * c + rotate_half(q.to(dtype)) * s
    k_out = k.to(dtype) * c + rotate_half(k.to(dtype)) * s
    return q_out.to(q.dtype), k_out.to(k.dtype)


def _supported(x: torch.Tensor, cos: torch.Tensor, unsqueeze_dim: int) -> bool:
    return (
        use_triton(x)
        and x.dim() == 4
        and unsqueeze_dim in (1, 2)
        and cos.dim() == 3
        and cos.shape[-1] == x.shape[-1]
        and x.shape[-1] % 2 == 0
        and cos.device == x.device
    )


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int) -> torch.Tensor:
    if unsqueeze_dim == 2:  # (B, S, H, D) → view as (B, H, S, D)
        return _RoPEFunction.apply(x.transpose(1, 2), cos, sin).transpose(1, 2)
    return _RoPEFunction.apply(x, cos, sin)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of queries and keys, a drop-in for HF's ``apply_rotary_pos_emb``.

    Runs the Triton kernel on CUDA (and on CPU under ``TRITON_INTERPRET=1``) for 4-D inputs with full-width
    rotary embeddings, else the reference (partial rotary dims, gradients into ``cos``/``sin``).

    Args:
        q: ``(B, Hq, S, D)`` queries (``(B, S, Hq, D)`` with ``unsqueeze_dim=2``), any strides.
        k: ``(B, Hk, S, D)`` keys, same layout (``Hk`` may differ from ``Hq``: grouped-query attention).
        cos: ``(B, S, D)`` (or broadcastable over the batch) cosines per position.
        sin: same shape as ``cos``.
        unsqueeze_dim: where the head dimension sits relative to ``cos`` (1 or 2), as in Hugging Face.

    Returns:
        Rotated ``(q, k)`` in their input dtypes and layouts.

    Example:
        >>> q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
        >>> cos, sin = torch.ones(1, 6, 8), torch.zeros(1, 6, 8)
        >>> torch.equal(apply_rope(q, k, cos, sin)[0], q)
        True
    """
    if cos.shape != sin.shape:
        raise ValueError(f"apply_rope: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must have one shape")
    needs_ref = (
        not _supported(q, cos, unsqueeze_dim)
        or not _supported(k, cos, unsqueeze_dim)
        or (torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad))
    )
    if needs_ref:
        return apply_rope_reference(q, k, cos, sin, unsqueeze_dim)
    seq_dim = 2 if unsqueeze_dim == 1 else 1
    bsz, seq = q.shape[0], q.shape[seq_dim]
    cos = cos.expand(bsz, seq, cos.shape[-1])  # (B, S, D), stride 0 over a broadcast batch
    sin = sin.expand(bsz, seq, sin.shape[-1])
    if cos.stride(-1) != 1:
        cos = cos.contiguous()
    if sin.stride(-1) != 1:
        sin = sin.contiguous()
    return _rotate(q, cos, sin, unsqueeze_dim), _rotate(k, cos, sin, unsqueeze_dim)
