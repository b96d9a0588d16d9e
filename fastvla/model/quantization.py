"""bitsandbytes 4-/8-bit loading helpers: which modules stay unquantised, and the CPU repacking guard.

Quantisation is configuration, not a separate code path: pass a ``transformers.BitsAndBytesConfig`` to
``FastVLAModel.from_pretrained`` (or :func:`bnb_config`).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn


def bnb_config(
    bits: int = 4,
    compute_dtype: torch.dtype | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
) -> Any:
    """The reference ``BitsAndBytesConfig``: NF4 with double quantisation (QLoRA), or LLM.int8().

    Args:
        bits: 4 or 8.
        compute_dtype: dtype of the 4-bit matmuls (default: bf16 on bf16 GPUs, fp16 on older GPUs,
            fp32 on CPU).
        quant_type: ``"nf4"`` or ``"fp4"``.
        double_quant: quantise the quantisation constants too (saves ~0.4 bit/parameter).
    """
    from transformers import BitsAndBytesConfig

    from fastvla.model.modeling import NON_QUANTIZED_MODULES
    from fastvla.model.modeling import compute_dtype as best_dtype

    if bits not in (4, 8):
        raise ValueError(f"bits={bits} is not supported; use 4 (NF4/FP4) or 8 (LLM.int8())")
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(NON_QUANTIZED_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or best_dtype(),
        llm_int8_skip_modules=list(NON_QUANTIZED_MODULES),
    )


def prepare_bnb_config(config: Any) -> Any:
    """Copy of a bitsandbytes config that also skips FastVLA's small trainable modules.

    Other quantisation configs are returned unchanged.
    """
    from fastvla.model.modeling import NON_QUANTIZED_MODULES

    method = getattr(config, "quant_method", None)
    if getattr(method, "value", method) != "bitsandbytes":
        return config
    config = copy.deepcopy(config)
    skip = list(config.llm_int8_skip_modules or [])
    config.llm_int8_skip_modules = skip + [m for m in NON_QUANTIZED_MODULES if m not in skip]
    return config


def guard_cpu_4bit(model: nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns the layers guarded.

    bitsandbytes 0.50 converts ``Linear4bit`` weights in place to a packed inference layout on the first
    ``eval()`` + ``no_grad()`` forward on a CPU with AVX512-BF16. After that, training forwards still look
    right but LoRA gradients are silently wrong (relative error ~0.9). Disabling the fast path keeps the
    weights in the trainable layout. Harmless on CUDA.
    """
    if "bitsandbytes" not in sys.modules:  # nothing can be quantised; skip the slow import
        return 0
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is a bitsandbytes 4- or 8-bit linear."""
    if "bitsandbytes" not in sys.modules:  # nothing can be quantised; skip the slow import
        return False
    import bitsandbytes as bnb

    return any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def after_quantized_load(model: nn.Module) -> None:
    """Post-load fix-ups: guard 4-bit CPU layers and keep the unquantised modules in float32."""
    from fastvla.model.modeling import NON_QUANTIZED_MODULES

    guard_cpu_4bit(model)
    for name, module in model.named_modules():
        if name in NON_QUANTIZED_MODULES:
            module.float()
