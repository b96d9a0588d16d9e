"""NF4 dequantisation fused into the matmul, for few-token inference through bitsandbytes 4-bit layers.

bitsandbytes' ``Linear4bit`` runs a multi-token forward as two passes: dequantise the whole weight to a
bf16 copy (read ``N·K/2`` bytes, write ``2·N·K``), then a bf16 matmul that reads the copy again (``2·N·K``).
For an action chunk at batch 1 (~90 tokens) that is ~9 bytes moved per weight where 0.5 would do, which
is why a 4-bit forward runs slower than bf16. This kernel reads the packed weight once and dequantises
tiles in registers right before the tensor-core dot.

Math, for a weight ``W`` (N, K) stored row-major, two codes per byte, quantised in blocks of 64 elements
(32 bytes) of a row (``K % 64 == 0``, checked by :func:`supported`):

    byte[n, j] = (q[n, 2j] << 4) | q[n, 2j + 1]             (high nibble: the even column)
    absmax[b]  = code₂[a[b]] · absmax₂[b // B₂] + offset     (double quantisation; else stored in float32)
    W[n, k]    = nf4[q[n, k]] · absmax[(n·K + k) // 64]
    y          = x · Wᵀ (+ bias)

with ``nf4`` the 16-value NormalFloat table and ``code₂`` bitsandbytes' 8-bit dynamic map.

Design (why it is fast where the first version was 6.6× slower than bitsandbytes):

- **Whole bytes, loaded once.** A program loads a ``(BLOCK_N, BLOCK_KB)`` tile of packed bytes as a
  ``(BLOCK_N, BLOCK_KB/32, 32)`` view (one quantisation block per middle index): contiguous 16-byte vector
  loads, no per-element address math. ``hi = byte >> 4`` and ``lo = byte & 15`` give both columns.
- **Scales per block, not per element.** The ``(BLOCK_N, BLOCK_KB/32)`` absmax tile (and for nested
  quantisation its ``code₂``/``absmax₂`` decode) is computed once per step and broadcast over the trailing
  32 bytes of the 3-D view.
- **The NF4 table stays on chip.** ``tl.gather`` from the 16-value table (shared memory, 32-bit
  addresses, conflict-free broadcast reads) costs one ``LDS`` per value. Fallback variant (``gather=False``):
  loads from a 16-entry global table (one L1 line). There the table is fp16 for 16-bit activations: Triton
  pipelines ≥ 4-byte loads through ``cp.async``, which would stage every looked-up value in shared memory.
  A ``tl.where`` tree would cost ~15 selects per value, more issue slots than either lookup.
- **Weight bytes prefetched by hand** one K step ahead into registers (Triton's pipeliner does not stage
  loads that feed a lookup rather than the dot); the ``x`` tiles feed the dot and are pipelined by Triton.
- **Two column orders.** ``split_x`` (default): ``x`` is split once per call on the host into its even and
  odd columns ``(M, 2, K/2)`` (one small copy kernel), and two dots, ``hi · x_evenᵀ + lo · x_oddᵀ``, need
  no interleaving. ``interleave``: ``tl.join(hi, lo)`` + reshape restores the column order for one dot
  with the contiguous ``x`` tile, at ~20% more instructions per byte.
- **Weight rows are the dot's M side** (``yᵀ = W · xᵀ``): tensor-core tiles need ≥ 64 rows on that side,
  which the weight always has, while the token side may be as small as 16; a single token pads 16×, not 64×.
- **Split K.** A chunk of ~90 tokens gives one token tile, so the grid is ``N / BLOCK_N`` programs, too few
  for 132 SMs: the K loop is split across programs that add float32 partial sums atomically (relaxed
  order) into a zeroed buffer; with one split the result is stored directly, bias fused.
- **Tuned once per shape.** On CUDA, the first call for a (token bucket, N, K, dtype, nested) key times a
  short list of configurations (``BLOCK_N``, ``BLOCK_KB``, column order, lookup, warps, stages, a
  256-token tile at 129-256 tokens), then the winner's split factor (×½, ×2, 1), then bitsandbytes' own
  path, with ``triton.testing.do_bench``, and caches the fastest (bitsandbytes where it wins: its
  single-token kernel, say). A hand-rolled tuner rather than ``triton.autotune``: the split factor and the
  output buffer (float32 zeroed for atomics, else the activation dtype) depend on the chosen ``BLOCK_N``
  and must be known before the launch, and a first call inside CUDA-graph capture must not benchmark (it
  runs the bucket's default configuration). ``FASTVLA_NF4_TUNE=0`` switches tuning off;
  :data:`TUNE_TIMES` keeps every timing. Under ``TRITON_INTERPRET=1`` one small configuration runs.

Speed. Static estimate (sm_90 SASS of the K loop, Triton 3.6 and 3.9): ~530 warp-instructions per KiB of
packed weight at 88-128 tokens (~490 at 1-16), no register spills, i.e. instruction-bound rather than
bandwidth-bound. Measured on an H100 (benchmarks/NOTES.md, session 2): 88 × 4096 → 11008 in 66.8 µs against
bitsandbytes' 103.6 µs and a bf16 weight's 45.8 µs; the 224 decoder linears of a 7B model at 88 tokens in
10.8 ms against 15.8 ms; the whole 4-bit chunk forward (CUDA graph) 15.5-16.8 ms against 21.1 ms.
Slower than bitsandbytes + cuBLAS on the small SigLIP shapes and from ~256 tokens (compute-bound), where
the tuner keeps bitsandbytes. The tuner's choice follows first-call timings, which vary between runs.

Arithmetic of the dequantisation is float32, rounded to the activation dtype for the dot, with a float32
accumulator. Forward only: training keeps bitsandbytes' own autograd path (the patch in ``patch.py``
routes only ``no_grad`` calls). Launches never synchronise with the host and allocate by shape only, so
calls are CUDA-graph capturable (warm up eagerly first to capture the tuned configuration).
"""

import os
import warnings
from dataclasses import dataclass, replace

import torch

from ._triton import jit, next_power_of_2, tl, use_triton

MAX_TOKENS = 256  # beyond this the matmul is compute-bound and dequantise-then-cuBLAS wins
QBLOCK_BYTES = 32  # one bitsandbytes quantisation block: 64 codes of a row


@jit
def _nf4_matmul_kernel(
    X,
    WQ,
    ABSMAX,
    CODE,
    ABSMAX2,
    CODE2,
    OFFSET,
    BIAS,
    Y,
    M,
    N,
    K,
    STEPS_PER_SPLIT,
    stride_xm,
    LOG2_QBLOCK2: tl.constexpr,
    NESTED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KB: tl.constexpr,
    SPLIT_X: tl.constexpr,
    GATHER: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    # Grid (token tiles, weight-row tiles, K splits): token tiles vary fastest, so programs sharing a
    # weight tile run together and the second reads it from L2.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    NQB: tl.constexpr = BLOCK_KB // 32  # quantisation blocks per step
    KB = K // 2  # packed bytes per weight row
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = rm < M
    rn_c = tl.minimum(rn, N - 1)  # rows past N re-read the last row (never stored): no row mask needed
    qb = tl.arange(0, NQB)
    # (BLOCK_N, NQB, 32) byte offsets of one step inside the weight
    w_ptrs = WQ + rn_c.to(tl.int64)[:, None, None] * KB + (qb[None, :, None] * 32 + tl.arange(0, 32))
    blk_row = rn_c[:, None] * (K // 64) + qb[None, :]  # (BLOCK_N, NQB) absmax index at step 0
    if NESTED:
        offset = tl.load(OFFSET)  # a device scalar: reading it on the host would sync
    n_steps = tl.cdiv(KB, BLOCK_KB)
    step_lo = pid_k * STEPS_PER_SPLIT
    step_hi = tl.minimum(step_lo + STEPS_PER_SPLIT, n_steps)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # yᵀ tile
    if GATHER:
        table = tl.load(CODE + tl.arange(0, 16)).to(tl.float32)  # the 16 NF4 values, kept on chip
    # The packed bytes are prefetched one step ahead by hand, into registers: Triton's pipeliner does not
    # stage loads whose consumer is a lookup rather than the dot.
    kb_first = step_lo * BLOCK_KB
    kb_end = tl.minimum(step_hi * BLOCK_KB, KB)  # this split's last byte column (exclusive)
    byte_next = tl.load(w_ptrs + kb_first, mask=((kb_first + qb * 32) < kb_end)[None, :, None], other=0)
    for step in range(step_lo, step_hi):
        kb0 = step * BLOCK_KB
        q_mask = (kb0 + qb * 32) < KB  # (NQB,) whole blocks: K % 64 == 0
        byte = byte_next.to(tl.int32)  # (BLOCK_N, NQB, 32)
        kb1 = kb0 + BLOCK_KB
        byte_next = tl.load(w_ptrs + kb1, mask=((kb1 + qb * 32) < kb_end)[None, :, None], other=0)
        blk = blk_row + kb0 // 32  # (BLOCK_N, NQB)
        if NESTED:
            a_q = tl.load(ABSMAX + blk, mask=q_mask[None, :], other=0).to(tl.int32)
            absmax2 = tl.load(ABSMAX2 + (blk >> LOG2_QBLOCK2), mask=q_mask[None, :], other=0.0)
            scale = tl.load(CODE2 + a_q) * absmax2 + offset
        else:
            scale = tl.load(ABSMAX + blk, mask=q_mask[None, :], other=0.0)
        scale = scale[:, :, None]  # (BLOCK_N, NQB, 1)
        if GATHER:  # on-chip lookup (shared memory / shuffles), 32-bit addressing
            FLAT: tl.constexpr = BLOCK_N * BLOCK_KB
            hi = tl.reshape(tl.gather(table, tl.reshape(byte >> 4, (FLAT,)), 0), (BLOCK_N, NQB, 32))
            lo = tl.reshape(tl.gather(table, tl.reshape(byte & 15, (FLAT,)), 0), (BLOCK_N, NQB, 32))
        else:  # L1-cached global lookup in a 2-byte table (see _run)
            hi = tl.load(CODE + (byte >> 4)).to(tl.float32)
            lo = tl.load(CODE + (byte & 15)).to(tl.float32)
        hi = hi * scale  # (BLOCK_N, NQB, 32) even columns
        lo = lo * scale  # odd columns
        if SPLIT_X:
            # X is (M, 2, K/2): even columns then odd columns of each token
            kk = kb0 + tl.arange(0, BLOCK_KB)
            x_mask = (kk < KB)[:, None] & m_mask[None, :]
            x_ptrs = X + rm[None, :] * stride_xm + kk[:, None]  # (BLOCK_KB, BLOCK_M) = x_evenᵀ tile
            x_even = tl.load(x_ptrs, mask=x_mask, other=0.0)
            x_odd = tl.load(x_ptrs + KB, mask=x_mask, other=0.0)
            w_hi = tl.reshape(hi, (BLOCK_N, BLOCK_KB)).to(X.dtype.element_ty)
            w_lo = tl.reshape(lo, (BLOCK_N, BLOCK_KB)).to(X.dtype.element_ty)
            acc = tl.dot(w_hi, x_even, acc)
            acc = tl.dot(w_lo, x_odd, acc)
        else:
            w = tl.reshape(tl.join(hi, lo), (BLOCK_N, 2 * BLOCK_KB))  # (BLOCK_N, NQB, 32, 2) -> columns
            kk = 2 * kb0 + tl.arange(0, 2 * BLOCK_KB)
            x_t = tl.load(
                X + rm[None, :] * stride_xm + kk[:, None],
                mask=(kk < K)[:, None] & m_mask[None, :],
                other=0.0,
            )  # (2·BLOCK_KB, BLOCK_M) = xᵀ tile
            acc = tl.dot(w.to(X.dtype.element_ty), x_t, acc)
    if HAS_BIAS:
        bias = tl.load(BIAS + rn_c).to(tl.float32)
        acc += tl.where(pid_k == 0, bias, 0.0)[:, None]
    y_ptrs = Y + rm[None, :] * N + rn[:, None]  # (BLOCK_N, BLOCK_M) → y[m, n]
    y_mask = m_mask[None, :] & (rn < N)[:, None]
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc, mask=y_mask, sem="relaxed")
    else:
        tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=y_mask)


@dataclass(frozen=True)
class Nf4Config:
    """One launch configuration of the fused kernel.

    Attributes:
        block_n: weight rows (output features) per program, a power of two ≥ 16.
        block_kb: packed bytes of a row per K step (2 columns each), a power of two ≥ 32.
        split_x: column order (module docstring): split ``x`` on the host and run two dots, else
            interleave the dequantised tile and run one.
        gather: look the NF4 values up on chip with ``tl.gather`` (shared memory, 32-bit addresses),
            else with loads from a 2-byte table in global memory (L1-resident).
        num_warps: Triton warps per program.
        num_stages: software-pipelining depth of the K loop (the ``x`` tiles).
        split: K splits (programs per output tile); 0 picks one from the SM count.
        block_m: tokens per program (16-256, a power of two); 0: the token count rounded up to a power of
            two, at most 128. Every token tile dequantises the weight again, so 256 halves that work
            at 129-256 tokens.
    """

    block_n: int = 128
    block_kb: int = 64
    split_x: bool = True
    gather: bool = True
    num_warps: int = 8
    num_stages: int = 2
    split: int = 0
    block_m: int = 0

    def __post_init__(self) -> None:
        if self.block_m and (self.block_m not in (16, 32, 64, 128, 256)):
            raise ValueError(f"block_m={self.block_m} must be 0 (auto) or a power of two in 16..256")
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise ValueError(f"block_n={self.block_n} must be a power of two >= 16")
        kb = self.block_kb
        if kb < QBLOCK_BYTES or kb & (kb - 1):
            raise ValueError(f"block_kb={kb} must be a power of two >= {QBLOCK_BYTES} (whole quant blocks)")


C = Nf4Config
# Candidates timed by the tuner, by token bucket; the first of each list is the default (used inside graph
# capture or with tuning off). Chosen from the sm_90 SASS of the loop (Triton 3.9):
# split_x + gather issue the fewest instructions per weight byte (~550 warp-instructions per KiB at
# 128 tokens, ~500 at 16) with no register spills; the load-table variants stay as fallbacks should
# tl.gather not compile on an older Triton.
_MID = (
    C(128, 64, True, True, 8, 2),
    C(128, 64, True, True, 8, 3),
    C(64, 64, True, True, 4, 3),
    C(128, 32, True, True, 8, 4),
    C(256, 64, True, True, 8, 2),
    C(128, 64, False, True, 8, 3),
    C(128, 64, True, False, 8, 3),
)
_CANDIDATES: dict[str, tuple[Nf4Config, ...]] = {
    "small": (  # up to 32 tokens
        C(64, 64, True, True, 4, 4),
        C(128, 64, True, True, 4, 4),
        C(128, 128, True, True, 8, 3),
        C(64, 128, True, True, 4, 3),
        C(128, 64, False, True, 8, 3),
        C(64, 64, True, False, 4, 4),
    ),
    "mid": _MID,  # 33-128 tokens: one token tile
    # 129-256 tokens: one 256-token tile dequantises each weight tile once (~610 warp-instructions per KiB,
    # no spills, 166 KB of shared memory), where two 128-token tiles dequantise it twice (2 × ~530).
    "large": (_MID[0], C(128, 64, True, True, 8, 2, block_m=256), *_MID[1:]),
}
_INTERPRET_CONFIG = C(32, 64, True, True, 4, 1)
# Every timing of the last tuning per (tokens, N, K, dtype), µs: for benchmarks and notes.
TUNE_TIMES: dict[tuple, dict[str, float]] = {}
_TUNED: dict[tuple, Nf4Config | None] = {}  # None: bitsandbytes' path (faster, or no configuration ran)


def _bucket(m: int) -> int:
    """Token bucket of the tuner's cache: the token count rounded up to a power of two in 16..256."""
    return min(256, max(16, next_power_of_2(m)))  # tensor-core tiles need >= 16 on the token side


def _block_m(m: int, cfg: Nf4Config | None = None) -> int:
    return cfg.block_m if cfg is not None and cfg.block_m else min(128, _bucket(m))


def _candidates(m: int) -> tuple[Nf4Config, ...]:
    bucket = _bucket(m)
    return _CANDIDATES["small" if bucket <= 32 else "mid" if bucket <= 128 else "large"]


def _auto_split(cfg: Nf4Config, m: int, n: int, k: int, sms: int, per_sm: float = 2.0) -> int:
    """K splits that bring the grid to about ``per_sm`` programs per SM (each split ≥ 2 K steps)."""
    tiles = -(-m // _block_m(m, cfg)) * -(-n // cfg.block_n)
    steps = -(-(k // 2) // cfg.block_kb)
    split = max(1, min(round(per_sm * sms / tiles), steps // 2))
    return -(-steps // -(-steps // split))  # no empty splits


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
    return absmax, code, absmax, code, torch.zeros((), device=device), 1, False


def _kernel_state(quant_state, device: torch.device, half_table: bool) -> tuple:
    """:func:`_state_tensors` prepared once per weight and device (no conversion kernels per call)."""
    cache = quant_state.__dict__.setdefault("_fastvla_nf4", {})
    key = (device, quant_state.absmax.data_ptr(), half_table)  # absmax moves with QuantState.to()
    if key in cache:
        return cache[key]
    state = _state_tensors(quant_state, device)
    state = (state[0], state[1].to(torch.float16) if half_table else state[1], *state[2:])
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return state  # conversions made inside a capture only run at replay: never cache their outputs
    if any(k[:2] != key[:2] for k in cache):
        cache.clear()  # the weight moved: drop tensors of the old place
    cache[key] = state
    return state


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


def _run(
    x2: torch.Tensor,
    packed: torch.Tensor,
    quant_state,
    bias: torch.Tensor | None,
    cfg: Nf4Config,
) -> torch.Tensor:
    """One launch of the kernel with configuration ``cfg`` on contiguous ``x2`` (M, K); returns (M, N)."""
    m, k = x2.shape
    n = int(quant_state.shape[0])
    # A 2-byte table keeps global lookups out of Triton's cp.async pipelining (which would stage every
    # looked-up value through shared memory); fp16 holds the NF4 values to 2^-11, under bf16/fp16's own
    # rounding of the dequantised weight.
    half_table = x2.element_size() == 2 and not cfg.gather
    absmax, code, absmax2, code2, offset, block2, nested = _kernel_state(quant_state, x2.device, half_table)
    block_m = _block_m(m, cfg)
    split = cfg.split or _auto_split(cfg, m, n, k, _sm_count(x2.device))
    steps = -(-(k // 2) // cfg.block_kb)
    per_split = -(-steps // split)
    split = -(-steps // per_split)
    atomic = split > 1
    if cfg.split_x:  # (M, 2, K/2): even columns, then odd columns
        x_arg = x2.view(m, k // 2, 2).transpose(1, 2).contiguous()
    else:
        x_arg = x2
    y = torch.zeros((m, n), device=x2.device, dtype=torch.float32) if atomic else x2.new_empty((m, n))
    bias_arg = bias.to(x2.dtype).contiguous() if bias is not None else y
    grid = (-(-m // block_m), -(-n // cfg.block_n), split)
    _nf4_matmul_kernel[grid](
        x_arg,
        packed,
        absmax,
        code,
        absmax2,
        code2,
        offset,
        bias_arg,
        y,
        m,
        n,
        k,
        per_split,
        x_arg.stride(0),
        LOG2_QBLOCK2=block2.bit_length() - 1,
        NESTED=nested,
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_KB=cfg.block_kb,
        SPLIT_X=cfg.split_x,
        GATHER=cfg.gather,
        ATOMIC=atomic,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return y.to(x2.dtype) if atomic else y


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _tuning_enabled() -> bool:
    return os.environ.get("FASTVLA_NF4_TUNE", "1") not in ("", "0")


def _time_us(fn) -> float:
    from triton.testing import do_bench

    return 1000.0 * do_bench(fn, warmup=5, rep=25, return_mode="median")


def _tune(x2: torch.Tensor, packed: torch.Tensor, quant_state, bias: torch.Tensor | None) -> Nf4Config | None:
    """Time every candidate (then the best one's split ×½, ×2 and 1) on these tensors; return the fastest, or
    ``None`` where bitsandbytes' own path is faster or no configuration runs."""
    m, k = x2.shape
    n, sms = int(quant_state.shape[0]), _sm_count(x2.device)
    results: dict[Nf4Config, float] = {}
    errors = []

    def trial(cfg: Nf4Config) -> None:
        try:
            results[cfg] = _time_us(lambda: _run(x2, packed, quant_state, bias, cfg))
        except Exception as exc:  # e.g. triton's OutOfResources (shared memory) on a smaller GPU
            errors.append(f"{cfg}: {type(exc).__name__}: {str(exc)[:200]}")

    for cand in _candidates(m):
        trial(replace(cand, split=_auto_split(cand, m, n, k, sms)))
    if not results:
        warnings.warn(
            f"fastvla nf4: no kernel configuration ran for x {tuple(x2.shape)} @ W ({n}, {k}); using "
            f"bitsandbytes' dequantise + matmul for this shape. First errors: {errors[:2]}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    best = min(results, key=results.get)
    for split in {1, _auto_split(best, m, n, k, sms, 1.0), _auto_split(best, m, n, k, sms, 4.0)}:
        trial(replace(best, split=split))  # 1: no atomics, no zeroing, no cast
    best = min(results, key=results.get)
    # Never slower than the layer's own path: bitsandbytes has a fast single-token kernel, for one.
    try:
        bnb_us = _time_us(lambda: _fallback(x2, packed, quant_state, bias))
    except Exception:  # bitsandbytes missing or unable: the kernel stands
        bnb_us = float("inf")
    TUNE_TIMES[(m, n, k, x2.dtype)] = {"bitsandbytes": bnb_us, **{repr(c): t for c, t in results.items()}}
    return best if results[best] <= bnb_us else None


def _config_for(
    x2: torch.Tensor, packed: torch.Tensor, quant_state, bias: torch.Tensor | None
) -> Nf4Config | None:
    if not x2.is_cuda:
        return _INTERPRET_CONFIG
    m, k = x2.shape
    key = (_bucket(m), int(quant_state.shape[0]), k, x2.dtype, bool(getattr(quant_state, "nested", False)))
    key += (x2.device.index,)
    if key not in _TUNED:
        if not _tuning_enabled() or torch.cuda.is_current_stream_capturing():
            return _candidates(m)[0]  # never benchmark inside a graph capture
        _TUNED[key] = _tune(x2, packed, quant_state, bias)
    return _TUNED[key]


def tuned_configs() -> dict[tuple, Nf4Config | None]:
    """The configurations chosen so far, keyed by (token bucket, N, K, dtype, nested, device index).

    ``None`` marks a shape that uses bitsandbytes' path (faster there, or no configuration ran).
    """
    return dict(_TUNED)


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
    x: torch.Tensor,
    packed: torch.Tensor,
    quant_state,
    bias: torch.Tensor | None = None,
    config: Nf4Config | None = None,
) -> torch.Tensor:
    """``x @ Wᵀ (+ bias)`` for a bitsandbytes NF4 weight, dequantised inside the matmul (forward only).

    Runs the Triton kernel on CUDA (and CPU under ``TRITON_INTERPRET=1``) for up to :data:`MAX_TOKENS` rows
    of ``x`` without autograd and weights that :func:`supported` accepts; otherwise bitsandbytes'
    dequantise-then-matmul on CUDA and the plain-PyTorch reference on CPU. On CUDA the first call for a shape
    times a few configurations (module docstring); call once outside CUDA-graph capture to warm it up.

    Args:
        x: ``(..., K)`` activations (the layer's compute dtype).
        packed: the layer's ``Params4bit`` data (uint8, two codes per byte).
        quant_state: its ``bitsandbytes.functional.QuantState`` (``quant_type == "nf4"``).
        bias: optional ``(N,)`` bias.
        config: a fixed launch configuration instead of the tuned one (tests, benchmarks).

    Returns:
        ``(..., N)`` in ``x.dtype``.

    Example:
        >>> y = nf4_linear(x, layer.weight, layer.weight.quant_state, layer.bias)  # doctest: +SKIP
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
    if bias is not None and bias.shape != (int(quant_state.shape[0]),):
        raise ValueError(
            f"nf4_linear: bias has shape {tuple(bias.shape)}, expected ({quant_state.shape[0]},)"
        )
    cfg = None
    if use_kernel and x2.shape[0] > 0:
        x2 = x2.contiguous()
        cfg = config or _config_for(x2, packed, quant_state, bias)
    if cfg is None:
        return _fallback(x, packed, quant_state, bias)
    y = _run(x2, packed, quant_state, bias, cfg)
    return y.view(*x.shape[:-1], y.shape[-1])


def _fallback(x: torch.Tensor, packed: torch.Tensor, quant_state, bias: torch.Tensor | None) -> torch.Tensor:
    """What ``Linear4bit`` itself runs on CUDA (e.g. for K % 64 != 0, SigLIP's 4304); the reference on CPU."""
    if x.is_cuda:
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, packed, quant_state, bias=None if bias is None else bias.to(x.dtype))
    return nf4_linear_reference(x, packed, quant_state, bias)
