"""A toy model for the graphed-update tests, and (run as a script under torchrun) the two-rank worker."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn


class Toy(nn.Module):
    """``model(**inputs).loss`` like FastVLAModel, with a buffer that training updates (like BatchNorm)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.net = nn.Sequential(nn.Linear(8 + 4, 16), nn.GELU(), nn.Linear(16, 3))
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, input_ids, attention_mask, state, actions):
        mask = attention_mask[..., None].float()
        text = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        if self.training:
            self.seen += 1
        pred = self.net(torch.cat([text, state], -1))
        return SimpleNamespace(loss=(pred - actions).abs().mean())


def batch(seed: int, n: int = 8, tokens: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1, 50, (n, tokens), generator=g),
        "attention_mask": torch.ones(n, tokens, dtype=torch.long),
        "state": torch.randn(n, 4, generator=g),
        "actions": torch.randn(n, 3, generator=g),
    }


def _rank_main(out_dir: Path) -> None:
    """Each rank trains on its half of every global batch of 8; saves its parameters."""
    import torch.distributed as dist

    from fastvla.training.graphed_step import GraphedTrainStep

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        torch.manual_seed(100 + rank)  # different inits: the step must broadcast rank 0's weights
        model = Toy()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        mine = [{k: v[rank * 4 : (rank + 1) * 4] for k, v in batch(u, n=8).items()} for u in range(3)]
        step = GraphedTrainStep(model, opt, mine[0], max_grad_norm=1.0, autocast_dtype=None, capture=False)
        for b in mine:
            step.update([b])
        torch.save([p.detach().clone() for p in model.parameters()], out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
