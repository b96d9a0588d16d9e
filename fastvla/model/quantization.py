"""bitsandbytes 4-/8-bit loading helpers: which modules stay unquantised, and the CPU repacking guard.

Quantisation is configuration, not a separate code path: pass a ``transformers.BitsAndBytesConfig`` to
``FastVLAModel.from_pretrained`` (or :func:`bnb_config`).
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from fastvla.constants import FRESH_MODULES

logger = logging.getLogger(__name__)

#: Modules never quantised (small, trainable, kept in higher precision). Patterns match module-name prefixes.
NON_QUANTIZED_MODULES = list(FRESH_MODULES)
#: What bitsandbytes (0.49+) logs on import on CPUs with AVX512-BF16 when the optional ``kernels`` package
#: cannot fetch its fused CPU 4-bit kernel from the Hugging Face hub (offline, not installed, untrusted).
_BNB_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


def compute_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """Best training dtype for a device: bf16 where supported, fp16 on older GPUs (T4), fp32 on CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _DropKernelWarning(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(_BNB_KERNEL_WARNING):
            self.dropped = True
            return False
        return True


def import_bitsandbytes() -> Any:
    """``import bitsandbytes`` without its "Failed to load CPU gemm_4bit_forward from kernels-community"
    warning, which would otherwise greet every CPU 4-bit load.

    What it means: on CPUs with AVX512-BF16, bitsandbytes tries to download an optional fused 4-bit
    inference kernel through the ``kernels`` package and falls back to its own CPU code when it can't. The
    fallback gives the same results, and FastVLA turns that fast path off anyway (:func:`guard_cpu_4bit`,
    which keeps LoRA gradients right), so nothing is lost. The filter is scoped to this import; the
    message is logged once at DEBUG level on ``fastvla.model.quantization`` instead.
    """
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    bnb_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    drop = _DropKernelWarning()
    bnb_logger.addFilter(drop)
    try:
        import bitsandbytes  # deferred: start-up time (it loads its native library), inside the filter
    finally:
        bnb_logger.removeFilter(drop)
    if drop.dropped:
        logger.debug("bitsandbytes: optional fused CPU 4-bit kernel unavailable; using its built-in CPU path")
    return bitsandbytes


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
    if bits not in (4, 8):
        raise ValueError(f"bits={bits} is not supported; use 4 (NF4/FP4) or 8 (LLM.int8())")
    import_bitsandbytes()  # before transformers imports it, to keep the kernels-community warning quiet
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(NON_QUANTIZED_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or _best_dtype(),
        llm_int8_skip_modules=list(NON_QUANTIZED_MODULES),
    )


def prepare_bnb_config(config: Any) -> Any:
    """Copy of a bitsandbytes config that also skips FastVLA's small trainable modules.

    Other quantisation configs are returned unchanged.
    """
    method = getattr(config, "quant_method", None)
    if getattr(method, "value", method) != "bitsandbytes":
        return config
    import_bitsandbytes()
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
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:  # nothing can be quantised; skip the slow import
        return 0

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is a bitsandbytes 4- or 8-bit linear."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:  # nothing can be quantised; skip the slow import
        return False

    return any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def after_quantized_load(model: nn.Module) -> None:
    """Post-load fix-ups: guard 4-bit CPU layers and keep the unquantised modules in float32."""
    guard_cpu_4bit(model)
    for name, module in model.named_modules():
        if name in NON_QUANTIZED_MODULES:
            module.float()


_best_dtype = compute_dtype  # bnb_config's parameter named compute_dtype shadows the function
