"""Fused Triton kernels for the decoder's memory-bound ops, with plain-PyTorch references.

- :func:`rms_norm` — RMSNorm forward + backward in one pass per row (``rmsnorm.py``).
- :func:`swiglu` — ``silu(gate) * up`` forward + backward (``glu.py``).
- :func:`lora_linear` — a PEFT LoRA linear (frozen or 4-bit base) with the adapter's scale and add in the
  GEMM epilogues of forward and backward (``lora_linear.py``).
- :func:`swiglu_down` — SwiGLU into a frozen/4-bit + LoRA ``down_proj``, recomputing the SwiGLU output in
  backward instead of saving it (``lora_mlp.py``).
- :func:`apply_rope` — rotary embedding of queries and keys (``rope.py``).
- :func:`nf4_linear` — bitsandbytes NF4 dequantisation fused into the matmul, for inference (``nf4.py``).
- :func:`apply_kernels` / :func:`kernels_enabled` — swap them into a Hugging Face model, reversibly,
  switched by :class:`KernelConfig` (``patch.py``). Nothing is patched on import.

Kernels run on CUDA tensors, and on CPU tensors only under ``TRITON_INTERPRET=1`` (set before importing
this package; for tests). Elsewhere every function silently uses its reference, so calling code is portable.
"""

from .glu import swiglu, swiglu_reference
from .lora_linear import lora_linear, lora_linear_fallback_reason
from .lora_mlp import swiglu_down, swiglu_down_fallback_reason
from .nf4 import nf4_linear, nf4_linear_reference
from .patch import KernelConfig, KernelPatch, apply_kernels, kernels_enabled
from .rmsnorm import rms_norm, rms_norm_reference
from .rope import apply_rope, apply_rope_reference

__all__ = [
    "KernelConfig",
    "KernelPatch",
    "apply_kernels",
    "apply_rope",
    "apply_rope_reference",
    "kernels_enabled",
    "lora_linear",
    "lora_linear_fallback_reason",
    "nf4_linear",
    "nf4_linear_reference",
    "rms_norm",
    "rms_norm_reference",
    "swiglu",
    "swiglu_down",
    "swiglu_down_fallback_reason",
    "swiglu_reference",
]
