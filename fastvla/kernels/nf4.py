"""NF4 dequantisation fused into the matmul, for few-token inference through bitsandbytes 4-bit layers.

bitsandbytes' ``Linear4bit`` runs a multi-token forward as two passes: dequantise the whole weight to a
bf16 copy (read ``N·K/2`` bytes, write ``2·N·K``), then a bf16 matmul that reads the copy again (``2·N·K``).
For an action chunk at batch 1 (~90 tokens) that is ~9 bytes moved per weight where 0.5 would do, which
is why a 4-bit forward runs slower than bf16. This kernel reads the packed weight once and dequantises
tiles in registers right before the tensor-core dot.

Math, for a weight ``W`` (N, K) flattened row-major and quantised in blocks of ``B`` (64) elements:

    q[i]      = the 4-bit code of element i: high nibble of byte i // 2 for even i, low nibble for odd i
    absmax[b] = code₂[a[b]] · absmax₂[b // B₂] + offset     (double quantisation; else stored in float32)
    W[i]      = nf4[q[i]] · absmax[i // B]
    y         = x · Wᵀ (+ bias)

with ``nf4`` the 16-value NormalFloat table and ``code₂`` bitsandbytes' 8-bit dynamic map. Arithmetic of the
dequantisation is float32, the dot runs in the activation dtype with a float32 accumulator. Forward only:
training keeps bitsandbytes' own autograd path (the patch in ``patch.py`` routes only ``no_grad`` calls).
"""

import torch

from ._triton import jit, next_power_of_2, tl, use_triton

MAX_TOKENS = 256  # beyond this the matmul is compute-bound and dequantise-then-cuBLAS wins
BLOCK_N = 64


@jit
def _nf4_matmul_kernel(
    X,
    WQ,
    ABSMAX,
    CODE,
    ABSMAX2,
    CODE2,
    OFFSET,
    Y,
    M,
    N,
    K,
    K_SPLIT,
    stride_xm,
    LOG2_QBLOCK2: tl.constexpr,
    NESTED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    # One quantisation block (64 elements of a row, K % 64 == 0) per K step: one absmax per weight row.
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, 64)
    m_mask = rm < M
    n_mask = rn < N
    blocks_per_row = K >> 6
    row_bytes = WQ + rn.to(tl.int64)[:, None] * (K >> 1)  # (BLOCK_N, 1) packed rows
    shift = 4 - 4 * (rk & 1)  # even columns: high nibble
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if NESTED:
        offset = tl.load(OFFSET)  # a device scalar: reading it on the host would sync
    k_start = pid_k * K_SPLIT
    for k_off in range(0, K_SPLIT, 64):
        k0 = k_start + k_off
        cols = k0 + rk
        k_mask = cols < K  # the last split may run past K: x is zero there, so w only has to be finite
        x = tl.load(
            X + rm[:, None] * stride_xm + cols[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0
        )
        byte = tl.load(row_bytes + (cols >> 1)[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0)
        w = tl.load(CODE + ((byte.to(tl.int32) >> shift[None, :]) & 0xF))  # (BLOCK_N, 64) NF4 values
        block = rn.to(tl.int64) * blocks_per_row + (tl.minimum(k0, K - 64) >> 6)  # (BLOCK_N,) in bounds
        if NESTED:
            a_q = tl.load(ABSMAX + block, mask=n_mask, other=0).to(tl.int32)
            scale2 = tl.load(ABSMAX2 + (block >> LOG2_QBLOCK2), mask=n_mask, other=0.0)
            absmax = tl.load(CODE2 + a_q) * scale2 + offset
        else:
            absmax = tl.load(ABSMAX + block, mask=n_mask, other=0.0)
        w = (w * absmax[:, None]).to(X.dtype.element_ty)
        acc += tl.dot(x, tl.trans(w))
    y_ptr = Y + rm[:, None] * N + rn[None, :]
    y_mask = m_mask[:, None] & n_mask[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptr, acc, mask=y_mask)
    else:
        tl.store(y_ptr, acc.to(Y.dtype.element_ty), mask=y_mask)


def _state_tensors(quant_state, device: torch.device) -> tuple:
    """(absmax, code, absmax2, code2, offset, blocksize2, nested) of a bitsandbytes ``QuantState``."""
    code = quant_state.code.to(device=device, dtype=torch.float32)
    if getattr(quant_state, "nested", False):
        s2 = quant_state.state2
        return (
            quant_state.absmax,
            code,
            s2.absmax.to(torch.float32),
            s2.code.to(device=device, dtype=torch.float32),
            torch.as_tensor(quant_state.offset).to(device=device, dtype=torch.float32).reshape(1),
            int(s2.blocksize),
            True,
        )
    absmax = quant_state.absmax.to(torch.float32)
    return absmax, code, absmax, code, torch.zeros(1, device=device), 1, False


def supported(quant_state) -> bool:
    """Whether the kernel handles this weight: NF4 in blocks of 64 that never span two rows."""
    k = int(quant_state.shape[1])
    block2 = int(quant_state.state2.blocksize) if getattr(quant_state, "nested", False) else 1
    return (
        getattr(quant_state, "quant_type", None) == "nf4"
        and int(quant_state.blocksize) == 64
        and k % 64 == 0
        and block2 & (block2 - 1) == 0
    )


def _launch(x2: torch.Tensor, packed: torch.Tensor, quant_state) -> torch.Tensor:
    m, k = x2.shape
    n = int(quant_state.shape[0])
    absmax, code, absmax2, code2, offset, block2, nested = _state_tensors(quant_state, x2.device)
    block_m = min(128, max(16, next_power_of_2(m)))
    grid_n, grid_m = -(-n // BLOCK_N), -(-m // block_m)
    # Enough programs to fill the GPU: few tokens give few output tiles, so split K (fp32 atomic adds).
    programs = 4 * (torch.cuda.get_device_properties(x2.device).multi_processor_count if x2.is_cuda else 1)
    split = max(1, min(8, programs // (grid_n * grid_m), k // (4 * 64)))
    k_split = -(-k // (split * 64)) * 64
    split = -(-k // k_split)
    atomic = split > 1
    y = torch.zeros((m, n), device=x2.device, dtype=torch.float32) if atomic else x2.new_empty((m, n))
    _nf4_matmul_kernel[(grid_n, grid_m, split)](
        x2,
        packed,
        absmax,
        code,
        absmax2,
        code2,
        offset,
        y,
        m,
        n,
        k,
        k_split,
        x2.stride(0),
        LOG2_QBLOCK2=block2.bit_length() - 1,
        NESTED=nested,
        BLOCK_M=block_m,
        BLOCK_N=BLOCK_N,
        ATOMIC=atomic,
        num_warps=4,
        num_stages=3,
    )
    return y.to(x2.dtype) if atomic else y


def nf4_dequantize_reference(packed: torch.Tensor, quant_state) -> torch.Tensor:
    """Plain-PyTorch dequantisation of a bitsandbytes NF4 weight (the formula above), float32 ``(N, K)``."""
    n, k = (int(s) for s in quant_state.shape)
    absmax, code, absmax2, code2, offset, block2, nested = _state_tensors(quant_state, packed.device)
    flat = torch.arange(n * k, device=packed.device)
    byte = packed.reshape(-1)[flat // 2].to(torch.int32)
    nibble = (byte >> ((1 - flat % 2) * 4).to(torch.int32)) & 0xF
    block = flat // int(quant_state.blocksize)
    if nested:
        scale = code2[absmax[block].long()] * absmax2[block // block2] + offset
    else:
        scale = absmax[block]
    return (code[nibble.long()] * scale).view(n, k)


def nf4_linear_reference(
    x: torch.Tensor, packed: torch.Tensor, quant_state, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ dequantize(W).T + bias`` in plain PyTorch (the oracle for :func:`nf4_linear`)."""
    w = nf4_dequantize_reference(packed, quant_state).to(x.dtype)
    y = x @ w.t()
    return y + bias.to(y.dtype) if bias is not None else y


def nf4_linear(
    x: torch.Tensor, packed: torch.Tensor, quant_state, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ Wᵀ (+ bias)`` for a bitsandbytes NF4 weight, dequantised inside the matmul (forward only).

    Runs the Triton kernel on CUDA (and CPU under ``TRITON_INTERPRET=1``) for up to :data:`MAX_TOKENS` rows
    of ``x`` without autograd; otherwise the plain-PyTorch reference.

    Args:
        x: ``(..., K)`` activations (the layer's compute dtype).
        packed: the layer's ``Params4bit`` data (uint8, two codes per byte).
        quant_state: its ``bitsandbytes.functional.QuantState`` (``quant_type == "nf4"``).
        bias: optional ``(N,)`` bias.

    Returns:
        ``(..., N)`` in ``x.dtype``.
    """
    quant_type = getattr(quant_state, "quant_type", None)
    if quant_type != "nf4":
        raise ValueError(
            f"nf4_linear needs an NF4 quant state; got quant_type={quant_type!r}. "
            "Load the model with bnb_4bit_quant_type='nf4' or use the layer's own forward"
        )
    k = int(quant_state.shape[1])
    if x.shape[-1] != k:
        raise ValueError(f"nf4_linear: x has {x.shape[-1]} features but the weight expects {k}")
    x2 = x.reshape(-1, k)  # (tokens, K)
    use_kernel = (
        use_triton(x)
        and x2.shape[0] <= MAX_TOKENS
        and supported(quant_state)
        and not (torch.is_grad_enabled() and x.requires_grad)
    )
    if not use_kernel or x2.shape[0] == 0:
        return nf4_linear_reference(x, packed, quant_state, bias)
    y = _launch(x2.contiguous(), packed, quant_state)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.view(*x.shape[:-1], y.shape[-1])
