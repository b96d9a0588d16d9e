"""One entry point to add LoRA adapters (PEFT) to a FastVLA model, and merge-and-save for deployment.

Unsloth-style switches choose which parts get adapters (vision tower / language decoder, attention / MLP);
the small FastVLA modules (projector, fusion, state projection, action queries, action head, FiLM, camera
embedding) are always trained in full through PEFT's ``modules_to_save``, so they are saved with the adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fastvla.model.quantization import (
    NON_QUANTIZED_MODULES,
    guard_cpu_4bit,
    import_bitsandbytes,
    is_quantized,
)

#: Linear-layer name endings that belong to attention blocks (Llama/Qwen/Gemma, SigLIP/CLIP, ViT/DINOv2).
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "query", "key", "value", "qkv")


@dataclass
class LoraSettings:
    """Which layers get LoRA adapters and how large they are.

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (``alpha / r`` scales the update).
        dropout: dropout on the adapter input (default 0, as in OpenVLA's fine-tuning; above 0 the fused LoRA
            kernels of :mod:`fastvla.kernels` fall back to PEFT's path).
        target_vision: adapt the vision tower (its Linear layers; and Conv2d layers of conv towers).
        target_language: adapt the language decoder.
        attention: adapt attention projections.
        mlp: adapt MLP / feed-forward layers (and convolutions of conv towers).
        extra_targets: more module names (suffixes) to adapt.
        train_modules: module names trained in full. The FastVLA-specific modules
            (:data:`~fastvla.model.NON_QUANTIZED_MODULES`) are always included: they start from random
            weights, so freezing them would never make sense.
        use_rslora: rank-stabilised scaling ``alpha / sqrt(r)``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_vision: bool = True
    target_language: bool = True
    attention: bool = True
    mlp: bool = True
    extra_targets: tuple[str, ...] = ()
    train_modules: tuple[str, ...] = field(default_factory=lambda: tuple(NON_QUANTIZED_MODULES))
    use_rslora: bool = False

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1; got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1); got {self.dropout}")


def _is_linear(module: nn.Module) -> bool:
    bnb = import_bitsandbytes()  # deferred: start-up time (bitsandbytes loads its native library)

    return isinstance(module, (nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def _is_dense_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1


def lora_target_modules(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Full names of the layers that get adapters under ``settings``."""
    parts = []
    if settings.target_vision:
        parts.append(("vision.tower.", True))
    if settings.target_language:
        parts.append(("language_model.", False))
    conv_tower = getattr(getattr(model, "config", None), "vision_kind", "vit") == "conv"
    names = []
    for name, module in model.named_modules():
        for prefix, is_vision in parts:
            if not name.startswith(prefix):
                continue
            leaf = name.rsplit(".", 1)[-1]
            is_attn = leaf in ATTENTION_NAMES or (
                ("attn" in name or "attention" in name) and not name.endswith(("mlp", "intermediate.dense"))
            )
            if _is_linear(module):
                if (is_attn and settings.attention) or (not is_attn and settings.mlp):
                    names.append(name)
            elif is_vision and conv_tower and settings.mlp and _is_dense_conv(module):
                names.append(name)  # conv towers: their convolutions play the MLP role
    names += [n for n, _ in model.named_modules() if n and any(n.endswith(t) for t in settings.extra_targets)]
    return sorted(set(names))


def _train_module_names(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Module names to train in full; ModuleLists are expanded (PEFT cannot wrap a container)."""
    out = []
    for name, module in model.named_modules():
        if name in prefixes:
            if isinstance(module, nn.ModuleList):
                out += [f"{name}.{child}" for child, _ in module.named_children()]
            else:
                out.append(name)
    return out


def add_lora(model: nn.Module, settings: LoraSettings | None = None, **overrides: Any) -> Any:
    """Wrap ``model`` in a PEFT ``PeftModel`` with LoRA adapters; FastVLA's own modules train in full.

    Works on full-precision and on 4-/8-bit models (QLoRA). On CPU, 4-bit layers are guarded against
    bitsandbytes' inference repacking first (see :func:`fastvla.model.quantization.guard_cpu_4bit`).

    Args:
        model: a :class:`~fastvla.model.FastVLAModel`.
        settings: :class:`LoraSettings` (default reference recipe).
        **overrides: fields of :class:`LoraSettings` to change.

    Returns:
        The ``PeftModel``; call it like the model, ``print_trainable_parameters()`` for a summary.

    Example:
        >>> model = FastVLAModel.from_preset("tiny")  # doctest: +SKIP
        >>> peft_model = add_lora(model, r=8, target_vision=False)  # doctest: +SKIP
    """
    from peft import LoraConfig, get_peft_model  # deferred: start-up time (importing peft takes ~3 s)

    settings = settings or LoraSettings()
    if overrides:
        settings = LoraSettings(**{**settings.__dict__, **overrides})
    targets = lora_target_modules(model, settings)
    train = _train_module_names(
        model, tuple(dict.fromkeys([*NON_QUANTIZED_MODULES, *settings.train_modules]))
    )
    if not targets:
        raise ValueError(
            f"LoRA settings select no layers (target_vision={settings.target_vision}, target_language="
            f"{settings.target_language}, attention={settings.attention}, mlp={settings.mlp}); enable some"
        )
    guard_cpu_4bit(model)
    for param in model.parameters():
        param.requires_grad_(False)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=train or None,
        use_rslora=settings.use_rslora,
        bias="none",
    )
    return get_peft_model(model, config)


def merge_and_save(
    peft_model: Any, save_directory: str | os.PathLike, processor: Any = None, dequantize: bool = False
) -> nn.Module:
    """Merge the adapters into the base weights and save a plain FastVLA checkpoint.

    Args:
        peft_model: the model returned by :func:`add_lora`.
        save_directory: output folder (loadable with ``FastVLAModel.from_pretrained``/``FastVLAPolicy``).
        processor: a :class:`~fastvla.model.FastVLAProcessor` to save beside it.
        dequantize: for a quantised base, save full-precision weights instead of re-quantised ones.

    Returns:
        The merged model.
    """
    merged = peft_model.merge_and_unload()
    if dequantize and is_quantized(merged):
        merged = merged.dequantize()
    merged.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)
    return merged
