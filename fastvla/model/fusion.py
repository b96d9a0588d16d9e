"""Fusion of all cameras' visual tokens into a fixed number of decoder tokens.

``latent`` mode (default): learned latent queries, shifted by the instruction embedding, cross-attend to the
concatenated tokens of every camera (Perceiver-resampler style), so the decoder sequence length does not
grow with the number of cameras or the image resolution. ``prefix`` mode keeps every projected token.
Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
kernels where available).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastvla.model.configuration import FastVLAConfig

#: Cosine attention's per-head logit scale: initial value and cap (Swin Transformer V2 uses 10 and 100).
QK_NORM_INIT_SCALE, QK_NORM_MAX_SCALE = 10.0, 100.0


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` through SDPA (self-attention when context is x).

    With ``qk_norm`` it is cosine attention: ``softmax(s_h * cos(q, k)) v`` with a learned per-head scale
    ``s_h`` (stored as its log, clamped at ``QK_NORM_MAX_SCALE``).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, qk_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.logit_scale = None
        if qk_norm:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(QK_NORM_INIT_SCALE)))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` (B, Q, D) attends to ``context`` (B, N, D); returns (B, Q, D)."""
        b, q_len, dim = x.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (heads, dim // heads)).transpose(1, 2)  # (B, heads, L, D/heads)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(context)), split(self.v_proj(context))
        scale = None
        if self.logit_scale is not None:
            log_max = math.log(QK_NORM_MAX_SCALE)
            logit_scale = self.logit_scale.clamp(max=log_max).exp().to(q.dtype)  # (heads, 1, 1)
            q, k, scale = F.normalize(q, dim=-1) * logit_scale, F.normalize(k, dim=-1), 1.0
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, q_len, dim))  # (B, Q, D)


class FusionBlock(nn.Module):
    """Pre-norm block: cross-attention to the visual tokens, self-attention among queries, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, dropout: float, qk_norm: bool = False):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads, dropout, qk_norm)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout, qk_norm)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, queries: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Update ``queries`` (B, Q, D) from ``visual`` (B, N, D)."""
        queries = queries + self.cross_attn(self.norm_q(queries), self.norm_kv(visual))
        normed = self.norm_self(queries)
        queries = queries + self.self_attn(normed, normed)
        return queries + self.mlp(self.norm_mlp(queries))


class Fusion(nn.Module):
    """Turns (B, n_cams, N, D) projected visual tokens into the decoder's visual tokens.

    Args:
        config: the model config (``fusion`` and the decoder width ``text.hidden_size``).
    """

    def __init__(self, config: FastVLAConfig):
        super().__init__()
        cfg, dim, out_dim = config.fusion, config.fusion_dim, config.text.hidden_size
        self.mode = cfg.mode
        if self.mode == "latent":
            self.queries = nn.Embedding(cfg.num_queries, dim)
            self.instruction_proj = nn.Linear(out_dim, dim)
            self.blocks = nn.ModuleList(
                FusionBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, cfg.qk_norm)
                for _ in range(cfg.num_layers)
            )
            self.norm_out = nn.LayerNorm(dim)
            self.out_proj = nn.Linear(dim, out_dim) if dim != out_dim else nn.Identity()

    def num_tokens(self, n_cams: int, tokens_per_camera: int) -> int:
        """Decoder visual tokens for a given camera count and tokens per camera."""
        return self.queries.num_embeddings if self.mode == "latent" else n_cams * tokens_per_camera

    def forward(self, visual: torch.Tensor, instruction: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse visual tokens.

        Args:
            visual: (B, n_cams, N, D_fusion) projected visual tokens (camera embedding already added).
            instruction: (B, D_text) pooled instruction embedding conditioning the queries.

        Returns:
            (B, num_queries, D_text) in ``latent`` mode, (B, n_cams * N, D_text) in ``prefix`` mode.
        """
        visual = visual.flatten(1, 2)  # (B, cams*N, D)
        if self.mode == "prefix":
            return visual
        queries = self.queries.weight[None].expand(visual.shape[0], -1, -1).to(visual.dtype)  # (B, Q, D)
        if instruction is not None:
            queries = queries + self.instruction_proj(instruction.to(visual.dtype))[:, None, :]
        for block in self.blocks:
            queries = block(queries, visual)
        return self.out_proj(self.norm_out(queries))  # (B, Q, D_text)


class Projector(nn.Module):
    """Two-layer GELU MLP from the vision width to the decoder width (LLaVA's projector)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.linear_2(self.act(self.linear_1(x.to(self.linear_1.weight.dtype))))
