"""Data-parallel rows of ``benchmarks/gpu.py``: ``fv-ddp:N:FUSION:CAMS:B:OPTS``, run under
``torchrun --nproc-per-node N`` (``gpu.py`` launches it so).

Each of N processes trains FastVLA ``openvla-7b-shape`` in 4-bit + LoRA (r=32 on the decoder, dropout 0)
on its own GPU with ``fastvla train``'s update, :class:`fastvla.training.graphed_step.GraphedTrainStep`: the
forward + backward and the clip + AdamW captured in CUDA graphs, one NCCL all-reduce (average) of the flat
LoRA gradient buffer between them. ``B`` is the per-GPU batch. OPTS as in ``_gpu_rows.py`` (``k`` fused
kernels, ``mr`` kernels + MLP recomputation, ``gc`` checkpointing, ``g`` graphs; without ``g`` the same
update runs eagerly).

Every update's *global* batch (N x B samples) is drawn from a generator seeded by the update's index and
each rank takes its slice, so ``fv-ddp:1:...:16`` and ``fv-ddp:2:...:8`` see the same samples: their losses
must agree update by update (the row prints the global mean loss of each update).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gpu_common import TEXT_TOKENS, apply_tf32, gib, median
from _gpu_rows import _decoder_tokens, _fv_train_model, _opts

WARM, TIMED = 3, 10


def _global_batch(update: int, size: int, cams: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(1000 + update)
    return {
        "pixel_values": torch.randn(size, cams, 3, 224, 224, device=device, generator=g).to(torch.bfloat16),
        "input_ids": torch.randint(4, 32000, (size, TEXT_TOKENS), device=device, generator=g),
        "attention_mask": torch.ones(size, TEXT_TOKENS, device=device, dtype=torch.long),
        "state": torch.randn(size, 8, device=device, generator=g),
        "actions": torch.randn(size, 8, 7, device=device, generator=g),
        "action_is_pad": torch.zeros(size, 8, device=device, dtype=torch.bool),
    }


def row_fv_ddp(spec: str) -> dict[str, Any] | None:
    from fastvla.training.graphed_step import GraphedTrainStep

    _, n, fusion, cams, bsz, opts = spec.split(":")
    cams, bsz, opts = int(cams), int(bsz), _opts(opts)
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)
    dist.init_process_group("nccl", device_id=device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != int(n):
        raise SystemExit(f"{spec}: launched with {world} processes, the row asks for {n}")
    precision = apply_tf32()  # the same setting as every other row of the run
    model, patch = _fv_train_model(fusion, opts, device, lora_seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    torch.cuda.reset_peak_memory_stats(device)

    # ``aN``: N micro-batches of B per update (gradient accumulation); the global batch is world x N x B and
    # rank r, micro-batch m takes slice r x N + m, so 1 GPU x a2 and 2 GPUs x a1 see the same micro-batches.
    accum = next((int(o[1:]) for o in opts if o.startswith("a") and o[1:].isdigit()), 1)

    def local_batches(update: int) -> list[dict[str, torch.Tensor]]:
        full = _global_batch(update, world * accum * bsz, cams, device)
        return [
            {k: v[(rank * accum + m) * bsz : (rank * accum + m + 1) * bsz] for k, v in full.items()}
            for m in range(accum)
        ]

    def local_batch(update: int) -> dict[str, torch.Tensor]:
        return local_batches(update)[0]

    graph_error = None
    try:
        step = GraphedTrainStep(
            model, opt, local_batch(0), accum=accum, max_grad_norm=1.0, capture="g" in opts
        )
    except RuntimeError as err:  # capture failed: same update, eager
        graph_error = f"{type(err).__name__}: {str(err)[:300]}"
        step = GraphedTrainStep(model, opt, local_batch(0), accum=accum, max_grad_norm=1.0, capture=False)
    losses, times = [], []
    for update in range(WARM + TIMED):
        batch = local_batches(update)
        torch.cuda.synchronize(device)
        t = time.perf_counter()
        loss, _ = step.update(batch)
        torch.cuda.synchronize(device)
        if update >= WARM:
            times.append(time.perf_counter() - t)
        losses.append(loss)
    # The slowest rank sets the pace: use the max over ranks of each update's time.
    t_all = torch.tensor(times, device=device)
    dist.all_reduce(t_all, op=dist.ReduceOp.MAX)
    loss_all = torch.stack(losses).float()
    dist.all_reduce(loss_all, op=dist.ReduceOp.AVG)
    peak = torch.tensor([float(torch.cuda.max_memory_allocated(device))], device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    dist.destroy_process_group()
    if rank != 0:
        return None
    step_s = median(t_all.tolist())
    return {
        "row": spec,
        "system": "fastvla-ddp",
        "gpus": world,
        "fusion": fusion,
        "cameras": cams,
        "quant": "nf4",
        "batch": bsz,
        "global_batch": world * accum * bsz,
        "grad_accum": accum,
        "tokens": _decoder_tokens(fusion, cams),
        "opts": sorted(opts),
        "cuda_graph": step.captured,
        "graph_error": graph_error,
        "kernels": patch.counts,
        "step_s": round(step_s, 4),
        "samples_per_s": round(world * accum * bsz / step_s, 2),
        "peak_gib": gib(float(peak)),
        "losses": [round(x, 5) for x in loss_all.tolist()],
        **precision,
    }


if __name__ == "__main__":
    import json

    result = row_fv_ddp(sys.argv[1])
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)
