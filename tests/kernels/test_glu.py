"""Fused SwiGLU against a float64 oracle, forward and backward, interpreted on CPU and compiled on CUDA."""

import pytest
import torch

from fastvla.kernels import glu as K

from .conftest import TOL, assert_matches_oracle, rel_err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 300), (1100,)])  # 1100 spans two 1024-element blocks
def test_forward_backward_match_reference(device, shape, dtype):
    torch.manual_seed(0)
    g = (torch.randn(shape, device=device) * 4).to(dtype).requires_grad_()  # ±12: sigmoid saturates too
    u = torch.randn(shape, device=device).to(dtype).requires_grad_()
    assert_matches_oracle(K.swiglu, K.swiglu_reference, [g, u], TOL[dtype])


def test_non_contiguous_inputs(device):
    torch.manual_seed(3)
    gu = torch.randn(4, 7, 2 * 48, device=device)
    g, u = gu[..., :48], gu[..., 48:]  # views, as a fused gate_up projection would give
    assert rel_err(K.swiglu(g, u), K.swiglu_reference(g.double(), u.double())) < 1e-5


def test_kernel_path_is_taken(device):
    g = torch.randn(8, device=device, requires_grad=True)
    assert type(K.swiglu(g, torch.randn(8, device=device)).grad_fn).__name__ == "_SwiGLUFunctionBackward"


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="must match in shape and dtype"):
        K.swiglu(torch.randn(3, 4), torch.randn(3, 5))
