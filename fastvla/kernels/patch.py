"""Swap Hugging Face decoder blocks onto the fused kernels: explicit, scoped to one model, reversible.

Nothing is patched on import. :func:`apply_kernels` replaces, on the instances inside one model,

- ``forward`` of every Llama-style RMSNorm (a module named ``*RMSNorm`` with ``weight`` and
  ``variance_epsilon``: Llama, Mistral, Qwen2, SmolLM…; not Gemma's ``1 + weight`` variant) with
  :func:`~fastvla.kernels.rmsnorm.rms_norm`,
- ``forward`` of every gated MLP with ``gate_proj``/``up_proj``/``down_proj`` and a SiLU activation with
  ``down_proj(swiglu(gate_proj(x), up_proj(x)))``; with ``mlp_recompute`` (on by default) the last two
  steps run as :func:`~fastvla.kernels.lora_mlp.swiglu_down`, which recomputes the SwiGLU output in the
  backward instead of keeping it (a frozen/4-bit ``down_proj`` with one LoRA adapter; other layers take the
  unfused path, decided on every call),
- ``forward`` of every PEFT LoRA Linear (plain or bitsandbytes 4-bit) with
  :func:`~fastvla.kernels.lora_linear.lora_linear`, which runs the adapter's scale and add in the GEMM
  epilogues of the forward and backward (``lora_linear``; unsupported layers — merged, dropout, several
  adapters, DoRA, trainable base — run PEFT's forward, decided on every call),
- ``forward`` of every bitsandbytes NF4 ``Linear4bit`` with one that, for calls without autograd (inference)
  of up to :data:`~fastvla.kernels.nf4.MAX_TOKENS` tokens, runs :func:`~fastvla.kernels.nf4.nf4_linear`
  (dequantisation fused into the matmul) and otherwise defers to bitsandbytes,
- and, while the patch is active, the module-level ``apply_rotary_pos_emb`` of each modeling file those
  blocks come from (attention calls it through the module's globals) with
  :func:`~fastvla.kernels.rope.apply_rope`; partial-rotary calls fall through to the original.

:meth:`KernelPatch.revert` (or leaving :func:`kernels_enabled`) restores every original. Adapters added by
PEFT do not matter: the MLP forward calls the (possibly LoRA-wrapped) projections as they are.

Example:
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
    ...                   num_attention_heads=4, vocab_size=100)
    >>> model = LlamaForCausalLM(cfg)
    >>> with kernels_enabled(model, KernelConfig()) as patch:
    ...     patch.counts["rms_norm"]
    3
"""

import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import nf4
from ._triton import use_triton
from .glu import swiglu
from .lora_linear import is_peft_lora_linear, lora_linear, lora_linear_fallback_reason
from .lora_mlp import swiglu_down, swiglu_down_fallback_reason
from .rmsnorm import rms_norm
from .rope import apply_rope


@dataclass
class KernelConfig:
    """Which fused kernels to swap in (all on by default; ``enabled=False`` turns the whole patch off).

    Attributes:
        enabled: master switch, so a training/model config can carry one of these and stay unpatched.
        rms_norm: fused RMSNorm for Llama-style ``*RMSNorm`` modules.
        swiglu: fused ``silu(gate) * up`` inside gated MLPs with a SiLU activation.
        rope: fused rotary embedding in place of the modeling file's ``apply_rotary_pos_emb``.
        nf4_inference: fused NF4 dequantise-matmul for bitsandbytes 4-bit layers in no-grad calls (a 7B
            4-bit chunk forward on an H100: 16.8 ms instead of 21.2; benchmarks/NOTES.md). Off here, so
            training's validation passes keep bitsandbytes' numerics; ``FastVLAPolicy`` turns it on.
        mlp_recompute: inside MLPs patched by ``swiglu`` (ignored when ``swiglu=False``), feed
            ``down_proj`` through :func:`~fastvla.kernels.lora_mlp.swiglu_down`, which saves only
            ``gate``, ``up`` and the rank-r ``lora_A`` output and recomputes ``silu(gate) * up`` in the
            backward: ``tokens x intermediate`` activations fewer per layer (49 MB per Llama-2-7B layer at
            2240 tokens in bf16) for one extra elementwise pass. Same forward bits and gradients to
            rounding as the unfused path; unsupported ``down_proj`` layers fall back to it per call.
        lora_linear: run every supported PEFT LoRA Linear through
            :func:`~fastvla.kernels.lora_linear.lora_linear`: ``y = base(x)`` then
            ``y.addmm_(x Aᵀ, Bᵀ, alpha=s)``, so the adapter's scale and add happen in the GEMM epilogue
            instead of three passes over the (tokens x out) output, and likewise ``dx += dt A`` in the
            backward. Saves no more than PEFT's path; outputs and gradients agree with it to rounding.
            ``down_proj`` is swapped too, but with ``mlp_recompute`` the MLP calls
            :func:`~fastvla.kernels.lora_mlp.swiglu_down` (same epilogue) instead of it.
    """

    enabled: bool = True
    rms_norm: bool = True
    swiglu: bool = True
    rope: bool = True
    nf4_inference: bool = False
    mlp_recompute: bool = True
    lora_linear: bool = True


def _rms_norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    if gate.dtype != up.dtype:  # e.g. one projection LoRA-wrapped under a different autocast state
        dtype = torch.promote_types(gate.dtype, up.dtype)
        gate, up = gate.to(dtype), up.to(dtype)
    return self.down_proj(swiglu(gate, up))


def _gated_mlp_recompute_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    if gate.dtype != up.dtype:  # as in _gated_mlp_forward
        dtype = torch.promote_types(gate.dtype, up.dtype)
        gate, up = gate.to(dtype), up.to(dtype)
    return swiglu_down(gate, up, self.down_proj)


def _lora_linear_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if args or kwargs:  # PEFT's mixed-batch adapter_names & co.
        return type(self).forward(self, x, *args, **kwargs)
    return lora_linear(x, self)


def _nf4_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    state = getattr(self.weight, "quant_state", None)
    tokens = x.numel() // max(x.shape[-1], 1)
    if (
        torch.is_grad_enabled()
        or state is None
        or getattr(state, "quant_type", None) != "nf4"
        or tokens > nf4.MAX_TOKENS
        or args
        or kwargs
        or not use_triton(x)
    ):
        return type(self).forward(self, x, *args, **kwargs)
    dtype = getattr(self, "compute_dtype", None) or x.dtype
    return nf4.nf4_linear(x.to(dtype), self.weight, state, self.bias).to(x.dtype)


def _is_bnb_4bit(module: nn.Module) -> bool:
    bnb = sys.modules.get("bitsandbytes")  # never import it just to look: nothing can be 4-bit without it
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit)


def _is_llama_rms_norm(module: nn.Module) -> bool:
    return (
        type(module).__name__.endswith("RMSNorm")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and hasattr(module, "variance_epsilon")
        and "Gemma" not in type(module).__name__
    )


def _is_silu_gated_mlp(module: nn.Module) -> bool:
    # Own children only: PEFT wrappers forward attribute lookups to the model they wrap.
    if not all(name in module._modules for name in ("gate_proj", "up_proj", "down_proj")):
        return False
    act = module._modules.get("act_fn", getattr(module, "act_fn", None))
    return isinstance(act, nn.SiLU) or type(act).__name__ in ("SiLU", "SiLUActivation")


class _RopeRegistry:
    """Reference-counted replacement of ``apply_rotary_pos_emb`` in modeling modules."""

    def __init__(self) -> None:
        self._originals: dict[str, tuple[Callable[..., Any], int]] = {}

    def acquire(self, module_name: str) -> None:
        module = sys.modules[module_name]
        original, count = self._originals.get(module_name, (module.apply_rotary_pos_emb, 0))
        if count == 0:
            module.apply_rotary_pos_emb = _make_rope(original)
        self._originals[module_name] = (original, count + 1)

    def release(self, module_name: str) -> None:
        original, count = self._originals[module_name]
        if count == 1:
            sys.modules[module_name].apply_rotary_pos_emb = original
            del self._originals[module_name]
        else:
            self._originals[module_name] = (original, count - 1)


_ROPE = _RopeRegistry()


def _make_rope(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze_dim = kwargs.pop("unsqueeze_dim", 1)
        if args and not kwargs and len(args) == 1 and isinstance(args[0], int):
            unsqueeze_dim = args[0]  # HF's positional unsqueeze_dim
        elif args or kwargs:  # an older signature (position_ids=…) or extras: keep the original
            return original(q, k, cos, sin, *args, **kwargs)
        if cos.shape[-1] != q.shape[-1]:  # partial rotary (Phi, …)
            return original(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
        return apply_rope(q, k, cos, sin, unsqueeze_dim)

    apply_rotary_pos_emb.__wrapped__ = original
    return apply_rotary_pos_emb


#: The keys of :attr:`KernelPatch.counts`.
KERNEL_COUNTS = ("rms_norm", "swiglu", "rope", "nf4", "mlp_recompute", "lora_linear")


@dataclass
class KernelPatch:
    """Handle of an applied patch; :meth:`revert` undoes exactly what :func:`apply_kernels` did.

    Attributes:
        counts: how many modules (or modeling files, for ``rope``) each kernel replaced;
            ``mlp_recompute`` counts the ``swiglu`` MLPs whose ``down_proj`` was supported by
            :func:`~fastvla.kernels.lora_mlp.swiglu_down` when patched (every ``swiglu`` MLP gets the
            recomputing forward, which decides per call; so add LoRA adapters before patching to see the
            count; :func:`~fastvla.kernels.lora_mlp.swiglu_down_fallback_reason` says why one is not);
            ``lora_linear`` counts the PEFT LoRA Linears supported by
            :func:`~fastvla.kernels.lora_linear.lora_linear` when patched (all PEFT LoRA Linears get the
            forward, which decides per call; ``down_proj`` layers included).
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KERNEL_COUNTS, 0))
    _modules: list[nn.Module] = field(default_factory=list, repr=False)
    _rope_modules: list[str] = field(default_factory=list, repr=False)
    _active: bool = field(default=True, repr=False)

    def revert(self) -> None:
        """Restore the original forwards and RoPE functions (idempotent)."""
        if not self._active:
            return
        for module in self._modules:
            if getattr(module.__dict__.get("forward"), "_fastvla_kernel", False):
                del module.forward
        for name in self._rope_modules:
            _ROPE.release(name)
        self._active = False


def _bind(module: nn.Module, fn: Callable[..., Any]) -> None:
    bound = types.MethodType(fn, module)
    bound.__func__._fastvla_kernel = True  # marks our replacement, so revert never drops someone else's
    module.forward = bound


def apply_kernels(model: nn.Module, config: KernelConfig | None = None) -> KernelPatch:
    """Swap the fused kernels into ``model`` (see the module docstring for what is replaced).

    Args:
        model: any module tree holding Hugging Face decoder blocks (a FastVLA model, a causal LM, a PEFT
            wrapper).
        config: which kernels to use; ``None`` means all, ``KernelConfig(enabled=False)`` none.

    Returns:
        A :class:`KernelPatch`; call ``revert()`` to undo.
    """
    config = config or KernelConfig()
    patch = KernelPatch()
    if not config.enabled:
        patch._active = False
        return patch
    rope_files: set[str] = set()
    for module in model.modules():
        if "forward" in module.__dict__:  # already patched (by us or someone else): leave it alone
            continue
        if config.rms_norm and _is_llama_rms_norm(module):
            _bind(module, _rms_norm_forward)
            patch._modules.append(module)
            patch.counts["rms_norm"] += 1
        elif config.swiglu and _is_silu_gated_mlp(module):
            _bind(module, _gated_mlp_recompute_forward if config.mlp_recompute else _gated_mlp_forward)
            patch._modules.append(module)
            patch.counts["swiglu"] += 1
            supported = config.mlp_recompute and swiglu_down_fallback_reason(module.down_proj) is None
            patch.counts["mlp_recompute"] += int(supported)
        elif config.lora_linear and is_peft_lora_linear(module):
            _bind(module, _lora_linear_forward)
            patch._modules.append(module)
            patch.counts["lora_linear"] += int(lora_linear_fallback_reason(module) is None)
        elif config.nf4_inference and _is_bnb_4bit(module):
            _bind(module, _nf4_forward)
            patch._modules.append(module)
            patch.counts["nf4"] += 1
        file = sys.modules.get(type(module).__module__)
        if config.rope and hasattr(file, "apply_rotary_pos_emb") and hasattr(file, "rotate_half"):
            rope_files.add(type(module).__module__)
    for name in sorted(rope_files):
        _ROPE.acquire(name)
        patch._rope_modules.append(name)
    patch.counts["rope"] = len(patch._rope_modules)
    return patch


@contextmanager
def kernels_enabled(model: nn.Module, config: KernelConfig | None = None) -> Iterator[KernelPatch]:
    """Context manager form of :func:`apply_kernels`: the originals come back on exit, even on error."""
    patch = apply_kernels(model, config)
    try:
        yield patch
    finally:
        patch.revert()
