"""Selective gradient checkpointing: recompute only the first ``n`` decoder layers in the backward.

Full checkpointing of a 32-layer 7B decoder trades ~0.26 GiB of saved activations per layer for ~2.4 ms of
recomputation per layer (H100, batch 8 × 280 tokens; benchmarks/NOTES.md); checkpointing only as many layers
as the memory budget needs buys the rest back. Which layers does not change the saving (every decoder layer
keeps the same activations); the first ``n`` are chosen so the rule is easy to state.

Transformers 5 decoder layers (``GradientCheckpointingLayer``) read their own ``gradient_checkpointing`` flag
on every call, so after ``model.gradient_checkpointing_enable(...)`` switching flags per layer is enough.

Example:
    >>> model = FastVLAModel.from_preset("tiny")
    >>> model.gradient_checkpointing_enable({"use_reentrant": False, "preserve_rng_state": False})
    >>> set_checkpointed_layers(model, 1)
    1
"""

from __future__ import annotations

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def decoder_layers(model: nn.Module) -> list[GradientCheckpointingLayer]:
    """The language decoder's checkpointable layers, in order; sees through a PEFT wrapper.

    Args:
        model: a :class:`~fastvla.model.FastVLAModel`, a PEFT model wrapping one, or any Hugging Face model
            (then all of its ``GradientCheckpointingLayer`` modules count as decoder layers).

    Returns:
        The layers, first to last.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "language_model", base)
    return [m for m in decoder.modules() if isinstance(m, GradientCheckpointingLayer)]


def set_checkpointed_layers(model: nn.Module, n: int | None) -> int:
    """Keep gradient checkpointing on for the first ``n`` decoder layers only (``None``: all of them).

    Call it after ``model.gradient_checkpointing_enable(...)`` (which sets the checkpoint function; for
    CUDA graphs pass ``{"use_reentrant": False, "preserve_rng_state": False}``). Layers outside the decoder
    (e.g. a ViT tower's) keep whatever that call set. The flags are read on every forward, so this can
    be called again at any time.

    Args:
        model: a :class:`~fastvla.model.FastVLAModel` or a PEFT model wrapping one.
        n: number of decoder layers to checkpoint, in ``[0, num_layers]``; ``None`` means all.

    Returns:
        The number of decoder layers now checkpointed.

    Raises:
        ValueError: ``n`` outside ``[0, num_layers]``, no decoder layers found, or checkpointing was never
            enabled on the model.
    """
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no GradientCheckpointingLayer decoder layers; "
            "set_checkpointed_layers needs a transformers 5 decoder (Llama, Qwen2, Gemma, ...)"
        )
    count = len(layers) if n is None else n
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(layers):
        raise ValueError(
            f"n={n!r} decoder layers to checkpoint is outside [0, {len(layers)}]; "
            f"pass an int from 0 to {len(layers)}, or None for all"
        )
    if count and not all(hasattr(layer, "_gradient_checkpointing_func") for layer in layers[:count]):
        raise ValueError(
            "gradient checkpointing is not enabled on this model; call "
            "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False}) "
            "before set_checkpointed_layers"
        )
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < count
    return count
