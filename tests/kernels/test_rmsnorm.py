"""Fused RMSNorm against a float64 oracle, forward and backward, interpreted on CPU and compiled on CUDA."""

import pytest
import torch

from fastvla.kernels import rmsnorm as K

from .conftest import TOL, assert_matches_oracle, rel_err

SHAPES = [(1, 8), (3, 5, 96), (37, 200)]  # odd widths exercise the column mask; 37 rows > CPU programs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_match_reference(device, shape, dtype):
    torch.manual_seed(0)
    n = shape[-1]
    x = (torch.randn(shape, device=device) * 3).to(dtype).requires_grad_()
    w = (1 + 0.3 * torch.randn(n, device=device)).to(dtype).requires_grad_()
    # dw sums over rows in float32 before one rounding to the weight's dtype
    assert_matches_oracle(K.rms_norm, K.rms_norm_reference, [x, w], TOL[dtype])  # default eps 1e-6


def test_frozen_weight_gets_no_gradient_and_dx_still_right(device):
    torch.manual_seed(1)
    x = torch.randn(6, 40, device=device, requires_grad=True)
    w = torch.randn(40, device=device)  # frozen, as RMSNorm weights are under QLoRA
    y = K.rms_norm(x, w)
    (y * torch.arange(40.0, device=device)).sum().backward()
    x64 = x.detach().double().requires_grad_()
    (K.rms_norm_reference(x64, w.double()) * torch.arange(40.0, device=device).double()).sum().backward()
    assert rel_err(x.grad, x64.grad) < 1e-5


def test_non_contiguous_rows(device):
    torch.manual_seed(2)
    base = torch.randn(4, 10, 64, device=device)
    x = base[:, ::2, :]  # row stride 128, unit last stride: the kernel reads it in place
    w = torch.randn(64, device=device)
    assert rel_err(K.rms_norm(x, w), K.rms_norm_reference(x.double(), w.double())) < 1e-5


def test_kernel_path_is_taken(device):
    x = torch.randn(2, 16, device=device, requires_grad=True)
    y = K.rms_norm(x, torch.ones(16, device=device))
    assert type(y.grad_fn).__name__ == "_RMSNormFunctionBackward"


def test_weight_shape_mismatch_names_the_fix():
    with pytest.raises(ValueError, match=r"weight shape \(8,\).*pass a weight of shape \(16,\)"):
        K.rms_norm(torch.randn(2, 16), torch.ones(8))
