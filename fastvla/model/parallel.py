"""Tensor parallelism of the vision tower with PyTorch's tensor-parallel API (DTensor).

Megatron-style sharding of every encoder layer of a ViT-family tower (SigLIP, CLIP, ViT, DINOv2) over the
``N`` processes of a device mesh: the query/key/value projections and the MLP's first linear are split by
output features (``ColwiseParallel``: each rank computes ``heads / N`` heads and ``1 / N`` of the MLP
hidden units), the attention output projection and the MLP's second linear by input features
(``RowwiseParallel``, whose outputs are summed with one all-reduce). Each rank keeps ``1 / N`` of those
weights; layer norms and embeddings stay whole. Hugging Face's attention reshapes with ``-1`` heads, so the
sharded layers run unmodified.

The ranks of a group must encode the same images. With data parallelism over the same ranks (each process
has its own batch, as in ``fastvla train``), :class:`GroupBatchTower` gathers the group's images, encodes
them together, and hands each rank its own rows back; its backward gathers the rows' gradients so that the
sharded weights see the whole group's batch (their gradient is that of the sum of the group's losses).

Proven equal to one process on 2 CPU processes (gloo) in ``tests/model/test_parallel.py``; not measured on
GPUs yet (``benchmarks/NOTES.md``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

COLWISE = ("q_proj", "k_proj", "v_proj", "fc1")
ROWWISE = ("o_proj", "out_proj", "fc2")

__all__ = [
    "GroupBatchTower",
    "parallelize_vision_tower",
    "tensor_parallel_vision",
    "unshard_vision",
    "unshard_vision_tower",
    "vision_tp_plan",
]


def vision_tp_plan(tower: nn.Module) -> dict[str, Any]:
    """``{module path: ColwiseParallel() | RowwiseParallel()}`` for every encoder linear of ``tower``.

    Raises:
        ValueError: no shardable linear (a convolutional tower), or a quantised one.
    """

    plan: dict[str, Any] = {}
    for name, module in tower.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in COLWISE + ROWWISE:
            continue
        if type(module) is not nn.Linear:
            raise ValueError(
                f"vision tensor parallelism shards plain nn.Linear layers; {name} is {type(module).__name__} "
                "(a quantised or LoRA-wrapped tower): train with --model.quantization none and no LoRA on "
                "the vision tower (--model.no-lora-vision)"
            )
        plan[name] = ColwiseParallel() if leaf in COLWISE else RowwiseParallel()
    rows = sum(leaf.rsplit(".", 1)[-1] in ROWWISE for leaf in plan)
    if plan and len(plan) != 3 * rows:  # per layer: q, k, v, fc1 split by rows; o/out, fc2 by columns
        raise ValueError(f"{type(tower).__name__}'s layers do not have the q/k/v/o + fc1/fc2 layout to shard")
    if not plan:
        raise ValueError(
            f"{type(tower).__name__} has no attention/MLP linears to shard: tensor parallelism of the vision "
            "tower needs a ViT-family tower (SigLIP, CLIP, ViT, DINOv2), not a convolutional one"
        )
    return plan


def parallelize_vision_tower(tower: nn.Module, mesh: Any) -> nn.Module:
    """Shard ``tower``'s encoder linears over the 1-D device ``mesh`` in place; returns ``tower``.

    Raises:
        ValueError: the tower cannot be sharded (see :func:`vision_tp_plan`) or its head count or MLP width is
            not a multiple of the mesh size.
    """

    size = mesh.size()
    config = getattr(tower, "config", None)
    for field in ("num_attention_heads", "intermediate_size"):
        value = getattr(config, field, None)
        if value is not None and value % size:
            raise ValueError(
                f"vision tower {field}={value} is not a multiple of the {size} tensor-parallel ranks"
            )
    parallelize_module(tower, mesh, vision_tp_plan(tower))
    return tower


@torch.no_grad()
def unshard_vision_tower(tower: nn.Module) -> nn.Module:
    """Undo :func:`parallelize_vision_tower` in place: whole weights again, no tensor-parallel hooks.

    Collective: every rank of the mesh must call it.
    """

    for name in vision_tp_plan_names(tower):
        module = tower.get_submodule(name)
        for pname, param in list(module.named_parameters(recurse=False)):
            if isinstance(param, DTensor):
                full = param.full_tensor()
                setattr(module, pname, nn.Parameter(full, requires_grad=param.requires_grad))
        module._forward_pre_hooks.clear()  # the input/output redistribution hooks of the parallel style
        module._forward_hooks.clear()
    return tower


def vision_tp_plan_names(tower: nn.Module) -> list[str]:
    """Paths of the modules :func:`vision_tp_plan` shards (whatever their type is now)."""
    return [n for n, _ in tower.named_modules() if n.rsplit(".", 1)[-1] in COLWISE + ROWWISE]


class _OwnRows(torch.autograd.Function):
    """Forward: this rank's rows of the group's output. Backward: every rank's row gradients, gathered."""

    @staticmethod
    def forward(ctx: Any, full: torch.Tensor, sizes: list[int], rank: int, group: Any) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        start = sum(sizes[:rank])
        return full[start : start + sizes[rank]]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return _gather_rows(grad.contiguous(), ctx.sizes, ctx.group), None, None, None


def _gather_rows(local: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """Concatenate every rank's ``local`` rows (sizes may differ) along dim 0, in rank order."""
    longest = max(sizes)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


class GroupBatchTower(nn.Module):
    """A sharded tower that encodes the images of every rank of its group together (see module docstring).

    Args:
        tower: the tower, already sharded by :func:`parallelize_vision_tower` over ``mesh``.
        mesh: the 1-D tensor-parallel device mesh.

    The tower's own attributes (``config``, ``embeddings``, ...) stay reachable through :attr:`tower`.
    """

    def __init__(self, tower: nn.Module, mesh: Any) -> None:
        super().__init__()
        self.tower = tower
        self.group = mesh.get_group()
        self.rank = dist.get_rank(self.group)
        self.config = getattr(tower, "config", None)

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        """The tower's output (``last_hidden_state`` and all) for this rank's images only."""
        n = torch.tensor([pixel_values.shape[0]], device=pixel_values.device)
        counts = [torch.zeros_like(n) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(counts, n, group=self.group)
        sizes = [int(c) for c in counts]
        out = self.tower(pixel_values=_gather_rows(pixel_values, sizes, self.group), **kwargs)
        out.last_hidden_state = _OwnRows.apply(out.last_hidden_state, sizes, self.rank, self.group)
        return out


def _vision(model: nn.Module) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.vision


def tensor_parallel_vision(model: nn.Module, mesh: Any, group_batch: bool = True) -> nn.Module:
    """Shard a FastVLA model's vision tower over ``mesh`` in place (PEFT-wrapped models too).

    Args:
        model: a :class:`~fastvla.model.FastVLAModel` (or its PEFT wrapper) with a ViT-family tower.
        mesh: the 1-D tensor-parallel device mesh (e.g. ``init_device_mesh("cuda", (2,))``).
        group_batch: each rank has its own images (data parallelism over the same ranks): encode the group's
            images together (:class:`GroupBatchTower`). ``False`` when every rank passes the same images.

    Returns:
        ``model``.
    """
    vision = _vision(model)
    parallelize_vision_tower(vision.tower, mesh)
    if group_batch:
        vision.tower = GroupBatchTower(vision.tower, mesh)
    return model


def unshard_vision(model: nn.Module) -> nn.Module:
    """Undo :func:`tensor_parallel_vision` in place (collective): a plain model again, e.g. to export it."""
    vision = _vision(model)
    if isinstance(vision.tower, GroupBatchTower):
        vision.tower = vision.tower.tower
    unshard_vision_tower(vision.tower)
    return model
