"""Run as a script under ``torchrun --nproc-per-node 2``: the tensor-parallel vision tower's results of each
rank, saved for ``test_parallel.py`` to compare with one process. ``cpu`` (gloo, default) or ``cuda``
(NCCL, one GPU per rank, TF32 off) as the second argument."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def pixels(seed: int, n: int) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def model_batch(seed: int, n: int) -> dict[str, torch.Tensor]:
    from fastvla.model.presets import random_batch

    return random_batch(n, seed)


def build() -> torch.nn.Module:
    from fastvla.model import FastVLAModel

    torch.manual_seed(0)
    return FastVLAModel.from_preset("tiny-vit")


def full_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in module.named_parameters():
        if p.grad is not None:
            g = p.grad
            out[name] = (g.full_tensor() if isinstance(g, DTensor) else g).detach().clone()
    return out


def main(out_dir: Path, device: str = "cpu") -> None:
    import os

    from torch.distributed.device_mesh import init_device_mesh

    from fastvla.model.parallel import parallelize_vision_tower, tensor_parallel_vision, unshard_vision

    torch.set_num_threads(1)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh(device, (dist.get_world_size(),))

    def on(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in batch.items()}

    try:
        # A: the tower alone, the same images on both ranks.
        tower = parallelize_vision_tower(copy.deepcopy(build().vision.tower).to(device), mesh)
        hidden = tower(pixel_values=pixels(1, 3).to(device)).last_hidden_state
        (hidden * torch.linspace(-1, 1, hidden.shape[-1], device=device)).sum().backward()
        result = {"tower_out": hidden.detach(), "tower_grads": full_grads(tower)}
        # B: the whole model, each rank its own batch (3 and 2 samples), the tower shared across the group.
        model = tensor_parallel_vision(build().to(device), mesh)
        loss = model(**on(model_batch(10 + rank, 3 - rank))).loss
        loss.backward()
        result.update(loss=loss.detach(), grads=full_grads(model))
        unshard_vision(model)
        with torch.no_grad():
            result["unsharded_actions"] = model(**on(model_batch(10 + rank, 3 - rank))).actions
        result = {k: _to_cpu(v) for k, v in result.items()}
        torch.save(result, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _to_cpu(value: object) -> object:
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value.cpu() if isinstance(value, torch.Tensor) else value


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
