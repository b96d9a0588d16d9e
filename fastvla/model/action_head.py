"""Action heads: a residual MLP regressing a chunk of continuous actions, or a 256-bin classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastvla.model.configuration import ActionHeadConfig


class ResidualBlock(nn.Module):
    """``x + Linear(GELU(Linear(LayerNorm(x))))``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class ActionHead(nn.Module):
    """Maps action-query hidden states (B, T, D) to actions (B, T, A) and computes the loss.

    ``continuous``: residual MLP, masked L1 (or MSE) over non-padded steps.
    ``discrete``: per-dimension logits over ``num_bins`` uniform bins of [-1, 1] (actions normalised to that
    range), cross-entropy; predictions are the centres of the arg-max bins.

    Args:
        config: head configuration.
        in_dim: decoder hidden size ``D``.
        action_dim: action size ``A``.
    """

    def __init__(self, config: ActionHeadConfig, in_dim: int, action_dim: int):
        super().__init__()
        self.head_type = config.head_type
        self.loss_type = config.loss
        self.num_bins = config.num_bins
        self.action_dim = action_dim
        self.input = nn.Linear(in_dim, config.hidden_size)
        self.blocks = nn.ModuleList(
            ResidualBlock(config.hidden_size, config.dropout) for _ in range(config.num_blocks)
        )
        self.norm = nn.LayerNorm(config.hidden_size)
        out = action_dim * (config.num_bins if self.head_type == "discrete" else 1)
        self.output = nn.Linear(config.hidden_size, out)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(actions (B, T, A), logits (B, T, A, bins) or None)``."""
        x = self.input(hidden.to(self.input.weight.dtype))
        for block in self.blocks:
            x = block(x)
        out = self.output(self.norm(x))
        if self.head_type == "continuous":
            return out, None
        logits = out.unflatten(-1, (self.action_dim, self.num_bins))  # (B, T, A, bins)
        centres = self.bin_centres(logits.device, logits.dtype)
        return centres[logits.argmax(-1)], logits

    def bin_centres(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Centres of the ``num_bins`` uniform bins over [-1, 1], shape (bins,)."""
        edges = torch.linspace(-1.0, 1.0, self.num_bins + 1, device=device, dtype=torch.float32)
        return ((edges[:-1] + edges[1:]) / 2).to(dtype)

    def loss(
        self,
        actions: torch.Tensor,
        logits: torch.Tensor | None,
        target: torch.Tensor,
        is_pad: torch.Tensor | None,
    ) -> torch.Tensor:
        """Masked loss over non-padded steps.

        Args:
            actions: predicted (B, T, A).
            logits: (B, T, A, bins) for the discrete head.
            target: (B, T, A) normalised target actions.
            is_pad: (B, T) bool, True where the target step is padding (beyond the episode end).
        """
        valid = torch.ones(target.shape[:2], device=target.device, dtype=torch.float32)
        if is_pad is not None:
            valid = (~is_pad.bool()).float()  # (B, T)
        denom = valid.sum().clamp(min=1.0) * target.shape[-1]
        target = target.float()
        if self.head_type == "discrete":
            bins = ((target.clamp(-1, 1) + 1) / 2 * self.num_bins).long().clamp(0, self.num_bins - 1)
            ce = F.cross_entropy(logits.float().flatten(0, 2), bins.flatten(), reduction="none")  # (B*T*A,)
            return (ce.view_as(target) * valid[..., None]).sum() / denom
        err = actions.float() - target
        per = err.abs() if self.loss_type == "l1" else err.pow(2)  # (B, T, A)
        return (per * valid[..., None]).sum() / denom
