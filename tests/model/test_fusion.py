"""Fusion attention: cosine attention (``fusion.qk_norm``) against a hand-written reference, its scale's
cap, and a save/load round trip of a model built with it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastvla.model import FastVLAModel, bnb_config
from fastvla.model.fusion import QK_NORM_INIT_SCALE, QK_NORM_MAX_SCALE, Attention


def _reference(attn: Attention, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """softmax(s_h * cos(q, k)) v, one head at a time, no SDPA."""
    heads, dim = attn.num_heads, x.shape[-1]
    q, k, v = attn.q_proj(x), attn.k_proj(ctx), attn.v_proj(ctx)
    outs = []
    for h in range(heads):
        sl = slice(h * dim // heads, (h + 1) * dim // heads)
        cos = F.normalize(q[..., sl], dim=-1) @ F.normalize(k[..., sl], dim=-1).transpose(-1, -2)
        scale = attn.logit_scale[h].clamp(max=math.log(QK_NORM_MAX_SCALE)).exp()
        outs.append(torch.softmax(scale * cos, dim=-1) @ v[..., sl])
    return attn.o_proj(torch.cat(outs, dim=-1))


def test_cosine_attention_matches_reference_and_caps_its_scale() -> None:
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qk_norm=True).eval()
    assert torch.allclose(attn.logit_scale.exp(), torch.full((4, 1, 1), QK_NORM_INIT_SCALE))
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, ctx), _reference(attn, x, ctx), rtol=1e-5, atol=1e-5)
        attn.logit_scale[0] = 10.0  # exp(10) is far above the cap: clamped to 100
        attn.logit_scale[1] = math.log(3.0)  # per head: head 1 uses 3
        torch.testing.assert_close(attn(x, ctx), _reference(attn, x, ctx), rtol=1e-5, atol=1e-5)
        plain = Attention(32, num_heads=4).eval()
        plain.load_state_dict({k: v for k, v in attn.state_dict().items() if k != "logit_scale"})
        assert plain.logit_scale is None and not torch.allclose(plain(x, ctx), attn(x, ctx))


def test_cosine_attention_is_sharper_than_fresh_dot_product_attention() -> None:
    """The point of the option: at initialisation, dot-product logits of fresh projections are ~0 (uniform
    attention = mean pooling), cosine logits at scale 10 are not."""
    torch.manual_seed(0)
    x, ctx = torch.randn(1, 8, 64), torch.randn(1, 128, 64)

    def entropy(attn: Attention) -> float:
        q = attn.q_proj(x).unflatten(-1, (4, 16)).transpose(1, 2)
        k = attn.k_proj(ctx).unflatten(-1, (4, 16)).transpose(1, 2)
        if attn.logit_scale is not None:
            logits = (
                attn.logit_scale.exp() * F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
            )
        else:
            logits = q @ k.transpose(-1, -2) / 4.0
        p = torch.softmax(logits, dim=-1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())

    with torch.no_grad():
        uniform = math.log(128)
        plain, cosine = entropy(Attention(64, 4)), entropy(Attention(64, 4, qk_norm=True))
    assert plain > 0.97 * uniform  # near-uniform
    assert cosine < plain - 0.3, (plain, cosine, uniform)


def test_qk_norm_model_trains_saves_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", fusion={"qk_norm": True})
    scales = [n for n, _ in model.named_parameters() if n.endswith("logit_scale")]
    assert len(scales) == 2 * model.config.fusion.num_layers  # cross- and self-attention of each block
    ids, state = torch.randint(0, 100, (2, 6)), torch.zeros(2, model.config.state_dim)
    pixels = torch.rand(2, len(model.config.cameras), 3, *model.config.image_size)
    actions = torch.zeros(2, model.config.chunk_size, model.config.action_dim)
    out = model(pixel_values=pixels, input_ids=ids, state=state, actions=actions)
    out.loss.backward()
    grad = dict(model.named_parameters())[scales[0]].grad
    assert grad is not None and grad.abs().sum() > 0  # the scale learns
    model.save_pretrained(tmp_path)
    loaded = FastVLAModel.from_pretrained(tmp_path).eval()
    assert loaded.config.fusion.qk_norm
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(
            loaded(pixel_values=pixels, input_ids=ids, state=state).actions,
            model(pixel_values=pixels, input_ids=ids, state=state).actions,
        )
    # in 4-bit the fusion (scales included) stays fp32 and loads unchanged
    quant = bnb_config(4, compute_dtype=torch.float32)
    nf4 = FastVLAModel.from_pretrained(tmp_path, quantization_config=quant)
    for name in scales:
        torch.testing.assert_close(dict(nf4.named_parameters())[name], dict(model.named_parameters())[name])
