"""Shared pieces of the GPU benchmark rows: shapes, timing, the one precision switch, measured labels.

Every row of ``benchmarks/gpu.py`` — the HF + PEFT + bitsandbytes recipe and FastVLA alike — runs in its own
process through ``_gpu_rows.main``, which calls :func:`apply_tf32` before the row and records what it set,
so no row can run with a TF32 setting the others did not get (the first recipe copy enabled TF32 for
FastVLA's rows only). Labels that could lie (training mode, how many layers were really recomputed) are
read from the model or measured while it runs (:func:`count_recomputed_layers`), never copied from the
row id.

``FASTVLA_BENCH_DEVICE=cpu`` (``gpu.py --dry-run-cpu``) runs the same row code on the CPU with tiny shapes
(2-layer decoder and tower), no CUDA graphs and no Triton kernels: it proves the plumbing (rows, labels,
JSON, ratios, README) before a GPU session spends its minutes; its numbers mean nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fastvla.model.presets import llama_config

#: ``cuda``, or ``cpu`` for a dry run (tiny shapes; see the module docstring).
DEVICE = os.environ.get("FASTVLA_BENCH_DEVICE", "cuda")
DRY_RUN = DEVICE == "cpu"
CKPT = os.environ.get("FASTVLA_GPU_CKPT", "/tmp/fastvla-gpu-ckpt-dry" if DRY_RUN else "/tmp/fastvla-gpu-ckpt")
OUT = os.environ.get("OUT", "/tmp")
#: Visual tokens per camera when images are decoder prefix tokens (SigLIP 224/14 = 16 x 16 patches).
PATCHES_PER_CAMERA = 256
#: Text tokens of the recipe's prompt after the visual prefix; the last ACTION_TOKENS carry the loss.
RECIPE_TEXT_TOKENS = 24
ACTION_TOKENS = 8
#: FastVLA's instruction length: 256 visual + 15 text + 1 state + 8 action queries = 280, the recipe's
#: 1-camera length.
TEXT_TOKENS = 15
#: The recipe's decoder: Llama-2-7B shapes with the recipe's vocabulary; a dry run keeps the vocabulary
#: (labels and token ids are drawn from it) and shrinks everything else.
LLAMA = (
    llama_config(128, 256, 2, 4, vocab_size=32064, max_position_embeddings=2048)
    if DRY_RUN
    else llama_config(4096, 11008, 32, 32, vocab_size=32064, max_position_embeddings=2048)
)
#: ``FASTVLA_BENCH_TF32=0`` runs every row without TF32; on by default, as in the reference recipe.
TF32_ENV = "FASTVLA_BENCH_TF32"


def recipe_tokens(cameras: int) -> int:
    """Sequence length of the recipe with ``cameras`` images as prefix tokens (1 -> 280, 2 -> 536)."""
    return PATCHES_PER_CAMERA * cameras + RECIPE_TEXT_TOKENS


def apply_tf32(enabled: bool | None = None) -> dict[str, Any]:
    """Set TF32 for fp32 matmuls and cuDNN convolutions; return what is now in effect.

    The one place any benchmark row sets it (``_gpu_rows.main`` calls it before every row).

    Args:
        enabled: on or off; ``None`` reads ``$FASTVLA_BENCH_TF32`` (default on).

    Returns:
        ``{"tf32": bool, "tf32_matmul": bool, "tf32_cudnn": bool}`` read back from torch.
    """
    if enabled is None:
        enabled = os.environ.get(TF32_ENV, "1") != "0"
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return precision_record(enabled)


def precision_record(requested: bool) -> dict[str, Any]:
    """What TF32 setting torch reports now, next to what was requested."""
    return {
        "tf32": requested,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def fv_preset_overrides() -> dict[str, Any]:
    """Config overrides of ``openvla-7b-shape`` for the run: none on a GPU, tiny tower and decoder in a dry
    run (same 224-pixel images, 256 patches per camera, 64 fused tokens, vocabulary)."""
    if not DRY_RUN:
        return {}
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {k: getattr(LLAMA, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")}
    text.update(num_attention_heads=4, num_key_value_heads=4)
    return {"vision": vision, "text": text, "fusion": {"hidden_size": 128, "num_heads": 4}}


def sync() -> None:
    """Wait for the GPU (nothing in a dry run)."""
    if not DRY_RUN:
        torch.cuda.synchronize()


def reset_peak() -> None:
    """Start a new peak-memory window."""
    if not DRY_RUN:
        torch.cuda.reset_peak_memory_stats()


def allocated() -> int:
    """Bytes allocated on the GPU now (0 in a dry run)."""
    return 0 if DRY_RUN else torch.cuda.memory_allocated()


def peak() -> int:
    """Peak bytes allocated since :func:`reset_peak` (0 in a dry run)."""
    return 0 if DRY_RUN else torch.cuda.max_memory_allocated()


def peak_reserved() -> int:
    """Peak bytes the caching allocator reserved (0 in a dry run)."""
    return 0 if DRY_RUN else torch.cuda.max_memory_reserved()


def empty_cache() -> None:
    """Give cached GPU memory back."""
    if not DRY_RUN:
        torch.cuda.empty_cache()


def gib(n: float) -> float:
    """Bytes as GiB, two decimals."""
    return round(n / 2**30, 2)


def median(xs: list[float]) -> float:
    """The upper median (the middle element of the sorted list)."""
    xs = sorted(xs)
    return xs[len(xs) // 2]


def pct(xs: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1)]


def timed_steps(step: Callable[[], Any], warm: int, steps: int) -> list[float]:
    """Wall times of ``steps`` synchronised calls after ``warm`` untimed ones."""
    times = []
    for i in range(warm + steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i >= warm:
            times.append(time.perf_counter() - t)
    return times


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a (PEFT-wrapped) Hugging Face model: its ``GradientCheckpointingLayer``s with
    an ``mlp``. Pass FastVLA's ``language_model``, not the whole model (its vision layers have one too)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and hasattr(m, "mlp")]


def checkpointing_state(layers: Iterable[nn.Module]) -> dict[str, Any]:
    """What Hugging Face will do with these layers: its check is ``gradient_checkpointing and training``.

    Returns:
        ``layers``, ``layers_in_train_mode``, ``layers_checkpointing_active`` and ``use_reentrant`` (from the
        checkpoint function's keywords; ``None`` when no layer checkpoints).
    """
    layers = list(layers)
    active = [m for m in layers if getattr(m, "gradient_checkpointing", False) and m.training]
    reentrant = None
    for m in active:
        func = getattr(m, "_gradient_checkpointing_func", None)
        reentrant = getattr(func, "keywords", {}).get("use_reentrant", reentrant)
    return {
        "layers": len(layers),
        "layers_in_train_mode": sum(m.training for m in layers),
        "layers_checkpointing_active": len(active),
        "use_reentrant": reentrant,
    }


def count_recomputed_layers(layers: list[nn.Module], forward_backward: Callable[[], Any]) -> int:
    """Run ``forward_backward`` once and count the layers whose MLP ran twice (forward + recomputation).

    Pre-hooks sit on each layer's ``mlp``, which is inside the checkpointed region, so a recomputed layer
    enters it again during the backward (a post-hook would not do: non-reentrant recomputation stops as
    soon as the last saved tensor is back, inside the MLP). This measures checkpointing instead of trusting
    flags.
    """
    calls = [0] * len(layers)
    handles = [
        layer.mlp.register_forward_pre_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, layer in enumerate(layers)
    ]
    try:
        forward_backward()
    finally:
        for handle in handles:
            handle.remove()
    return sum(c >= 2 for c in calls)


def linears(model: nn.Module) -> list[Any]:
    """Frozen base linears (bnb 4-bit or plain), skipping LoRA's own small ones."""
    kinds: tuple[type, ...] = (nn.Linear,)
    try:
        import bitsandbytes as bnb

        kinds = (bnb.nn.Linear4bit, nn.Linear)
    except Exception:  # bitsandbytes absent or without kernels here: plain linears only
        pass
    return [mod for name, mod in model.named_modules() if "lora_" not in name and isinstance(mod, kinds)]


def attn_flops(layers: int, dim: int, bsz: int, seq: int) -> float:
    """Attention FLOPs of a training step: QK^T and AV, 4·S²·D per sample per layer forward, backward 2×."""
    return 3 * 4 * bsz * seq * seq * dim * layers
