"""Kernel tests: interpreted on CPU (``TRITON_INTERPRET=1``) and compiled on CUDA (marker ``gpu``).

Triton reads ``TRITON_INTERPRET`` when it is imported (its own ``tl.sum`` & co. are ``@triton.jit``
functions too), and other packages import Triton early (bitsandbytes, peft), so the CPU tests cannot switch
to the interpreter inside a shared pytest process. They run in-process only when the variable was set
before start-up (``TRITON_INTERPRET=1 pytest tests/kernels``); otherwise ``test_interpreter_child.py``
reruns this folder in a child process with the variable set, and the in-process CPU cases skip.
"""

import os
from collections.abc import Callable

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """``cpu``: kernels under Triton's interpreter; ``cuda``: compiled, when a GPU is present."""
    pytest.importorskip("triton")
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (run through the device tool)")
        if INTERPRETED:
            pytest.skip("TRITON_INTERPRET=1 is set: the CUDA cases need compiled kernels")
        return torch.device("cuda")
    if not INTERPRETED:
        pytest.skip("CPU kernel cases run in the TRITON_INTERPRET=1 child (test_interpreter_child.py)")
    return torch.device("cpu")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (NaN never passes a ``<`` check)."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# Relative-error bounds against a float64 oracle, by the dtype the kernel stores in.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_matches_oracle(
    fn: Callable[..., torch.Tensor],
    oracle: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor],
    tol: float,
) -> None:
    """``fn(*inputs)`` and its gradients w.r.t. ``inputs`` against ``oracle`` in float64 (same upstream
    gradient): the output keeps the first input's shape and dtype; every relative error is below ``tol``."""
    y = fn(*inputs)
    assert y.dtype == inputs[0].dtype and y.shape == inputs[0].shape
    dy = torch.randn_like(y)
    got = (y, *torch.autograd.grad(y, inputs, dy))
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    y64 = oracle(*inputs64)
    want = (y64, *torch.autograd.grad(y64, inputs64, dy.double()))
    for name, a, b in zip(
        ["output", *(f"grad of input {i}" for i in range(len(inputs)))], got, want, strict=True
    ):
        assert rel_err(a, b) < tol, f"{name}: relative error {rel_err(a, b):.2e} >= {tol:g}"
