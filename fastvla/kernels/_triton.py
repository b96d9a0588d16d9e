"""Shared plumbing for the Triton kernels: whether a kernel can run on a tensor, and a guarded import.

Kernels run on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` was set *before* the kernel
modules were imported (Triton's interpreter; correct but ~4000x slower than PyTorch, for tests only).
Everywhere else the public functions fall back to their plain-PyTorch references, so code that calls them
works on any machine.
"""

import os
import types
from collections.abc import Callable
from typing import Any

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with CUDA torch wheels on Linux
    triton = None
    # Annotations like ``BLOCK: tl.constexpr`` are evaluated at definition time.
    tl = types.SimpleNamespace(constexpr=int, float32=None)
    HAS_TRITON = False


def jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit`` when Triton is importable, else the plain function (never launched then)."""
    return triton.jit(fn) if HAS_TRITON else fn


def interpret_mode() -> bool:
    """True when ``TRITON_INTERPRET`` asks Triton to interpret kernels on the CPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``x`` (a CUDA tensor, or CPU under ``TRITON_INTERPRET=1``)."""
    if not HAS_TRITON:
        return False
    if x.is_cuda:
        return True
    return x.device.type == "cpu" and interpret_mode()


def num_programs_hint(x: torch.Tensor) -> int:
    """A persistent-grid size: a few programs per streaming multiprocessor on CUDA, a handful on CPU."""
    if x.is_cuda:
        return 4 * torch.cuda.get_device_properties(x.device).multi_processor_count
    return 4


def next_power_of_2(n: int) -> int:
    """Smallest power of two ``>= n`` (Triton block sizes must be powers of two)."""
    return 1 << max(n - 1, 0).bit_length()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The references' arithmetic dtype: float32, or float64 for float64 inputs (test oracles)."""
    return torch.promote_types(x.dtype, torch.float32)
