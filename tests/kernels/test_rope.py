"""Fused RoPE against Hugging Face's formula in float64, both layouts, GQA, interpreted and on CUDA."""

import pytest
import torch

from fastvla.kernels import rope as K

from .conftest import TOL, rel_err


def _cos_sin(batch: int, seq: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Per-sample positions (left padding shifts them), frequencies repeated as HF's rotary embedding does.
    pos = torch.arange(seq, device=device)[None].float() + torch.arange(batch, device=device)[:, None]
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).float() / dim))
    freqs = pos[..., None] * inv  # (B, S, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (B, S, D)
    return emb.cos(), emb.sin()


def _hf_apply(q, k, cos, sin, unsqueeze_dim):
    """Hugging Face's ``apply_rotary_pos_emb`` written out, in the inputs' precision."""
    c, s = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * c + K.rotate_half(q) * s, k * c + K.rotate_half(k) * s


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_forward_backward_match_hf_formula(device, dtype, unsqueeze_dim):
    torch.manual_seed(unsqueeze_dim)
    batch, heads, kv_heads, seq, dim = 2, 20, 3, 5, 24  # 20 heads > one 16-head block; GQA keys
    if unsqueeze_dim == 1:  # HF's layout: a (B, S, H, D) projection viewed as (B, H, S, D)
        q = torch.randn(batch, seq, heads, dim, device=device).transpose(1, 2)
        k = torch.randn(batch, kv_heads, seq, dim, device=device)
    else:
        q = torch.randn(batch, seq, heads, dim, device=device)
        k = torch.randn(batch, seq, kv_heads, dim, device=device)
    q, k = q.to(dtype).requires_grad_(), k.to(dtype).requires_grad_()
    cos, sin = (t.to(dtype) for t in _cos_sin(batch, seq, dim, device))

    qo, ko = K.apply_rope(q, k, cos, sin, unsqueeze_dim)
    assert qo.shape == q.shape and ko.shape == k.shape and qo.dtype == dtype
    dq_out, dk_out = torch.randn_like(qo), torch.randn_like(ko)
    dq, dk = torch.autograd.grad((qo, ko), (q, k), (dq_out, dk_out))

    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    qr, kr = _hf_apply(q64, k64, cos.double(), sin.double(), unsqueeze_dim)
    dq64, dk64 = torch.autograd.grad((qr, kr), (q64, k64), (dq_out.double(), dk_out.double()))
    for out, ref in ((qo, qr), (ko, kr), (dq, dq64), (dk, dk64)):
        assert rel_err(out, ref) < TOL[dtype]


def test_batch_broadcast_cos_sin(device):
    torch.manual_seed(4)
    q, k = torch.randn(3, 4, 6, 8, device=device), torch.randn(3, 2, 6, 8, device=device)
    cos, sin = _cos_sin(1, 6, 8, device)  # (1, S, D): one position table for the whole batch
    qo, ko = K.apply_rope(q, k, cos, sin)
    qr, kr = _hf_apply(q.double(), k.double(), cos.double(), sin.double(), 1)
    assert rel_err(qo, qr) < 1e-5 and rel_err(ko, kr) < 1e-5


def test_kernel_path_is_taken(device):
    q = torch.randn(1, 2, 3, 8, device=device, requires_grad=True)
    cos, sin = _cos_sin(1, 3, 8, device)
    qo, _ = K.apply_rope(q, q.detach(), cos, sin)
    assert "RoPEFunction" in type(qo.grad_fn).__name__
