"""Attention backends of a FastVLA model, chosen by ``attn_implementation``.

* ``"sdpa"`` (default without flash-attn): ``torch.nn.functional.scaled_dot_product_attention``, which picks
  a kernel per call (FlashAttention-2, memory-efficient, cuDNN or math).
* ``"sdpa_flash"``: the same SDPA, restricted to PyTorch's **FlashAttention-2** kernel
  (``torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)``) for every attention that has no padding
  mask: the vision tower, the fusion (both never masked) and the decoder when no instruction token is padding
  (Hugging Face then passes no mask and ``is_causal=True``). FlashAttention cannot apply an arbitrary mask,
  so decoder calls of batches with padded instructions use the memory-efficient kernel instead of failing.
  Needs a CUDA GPU and bf16/fp16 activations (autocast or half weights); PyTorch raises "No available kernel"
  otherwise. The choice is made when the model is built: CPU models refuse it (PyTorch's CPU "flash" kernel
  is another implementation; ``sdpa`` already uses it there).
* ``"flash_attention_2"``: the ``flash-attn`` package through Hugging Face, where it is installed.

``sdpa_flash`` is registered in Hugging Face's attention and mask registries on first use (their documented
extension points), not on import, under the key :data:`HF_KEY` (Hugging Face reads any name containing
"flash" as a request for a flash-attn kernel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SDPA_FLASH = "sdpa_flash"
#: The name Hugging Face's registries know it by.
HF_KEY = "fastvla_sdpa_fa2"

__all__ = [
    "HF_KEY",
    "SDPA_FLASH",
    "check_attn_implementation",
    "flash_only",
    "register_sdpa_flash",
    "uses_sdpa_flash",
]


def check_attn_implementation(name: str | None, device: str | torch.device | None) -> None:
    """Refuse ``sdpa_flash`` off CUDA, naming the fix.

    Args:
        name: the requested backend (``None`` = automatic).
        device: where the model is built (``None`` = the default device, CUDA if available).

    Raises:
        ValueError: ``sdpa_flash`` for a model that is not on a CUDA device.
    """
    if name != SDPA_FLASH:
        return
    if not _all_on_cuda(device):
        raise ValueError(
            f"attn_implementation={SDPA_FLASH!r} runs PyTorch's FlashAttention-2 kernels, which need a CUDA "
            f"GPU; this model is built on {device or 'cpu'}. Use attn_implementation='sdpa' (the default "
            "picks the fastest available kernel), or build the model on a CUDA device"
        )


def _all_on_cuda(device: Any) -> bool:
    """Whether a device, device string or ``device_map`` puts every module on CUDA."""
    if isinstance(device, dict):
        return all(_all_on_cuda(d) for d in device.values())
    if isinstance(device, int):
        return torch.cuda.is_available()
    if device is None or device == "auto":
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


@contextlib.contextmanager
def flash_only() -> Iterator[None]:
    """Within the block, SDPA may only use its FlashAttention-2 kernel (an error if it cannot)."""

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        yield


def sdpa_flash_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Hugging Face's SDPA attention, on the FlashAttention-2 kernel when there is no mask to apply."""

    if attention_mask is None:
        backends = [SDPBackend.FLASH_ATTENTION]
    else:  # padding: FlashAttention takes no mask; the memory-efficient kernel does
        backends = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_sdpa_flash() -> None:
    """Register ``sdpa_flash`` with Hugging Face (attention function, and SDPA's mask builder); idempotent."""

    AttentionInterface.register(HF_KEY, sdpa_flash_attention_forward)
    AttentionMaskInterface.register(HF_KEY, sdpa_mask)


def uses_sdpa_flash(config: Any) -> bool:
    """Whether a model config asks for ``sdpa_flash`` (its own or its decoder's attention setting)."""
    text = getattr(config, "text", None)
    names = {getattr(config, "_attn_implementation", None), getattr(text, "_attn_implementation", None)}
    return HF_KEY in names
