"""Fused LoRA linear: the adapter's scale and add run in the GEMM epilogue, over a frozen (4-bit) base.

A PEFT LoRA layer over a frozen base weight ``W`` (``nn.Linear`` or a bitsandbytes NF4/FP4 ``Linear4bit``)
with one adapter ``A`` (r × in), ``B`` (out × r) and scale ``s`` computes ``y = base(x) + s · (x Aᵀ) Bᵀ``
as the base GEMM, two rank-r GEMMs, then a multiply and an add over the whole (tokens × out) output
(bitsandbytes layers add a defensive clone of it), and in the backward the multiply again and an add of the
two input gradients. :func:`lora_linear` computes

    y = base(x)                 (bitsandbytes: the same dequantise + matmul; nn.Linear: F.linear)
    t = x Aᵀ                    (tokens × r, small)
    y += s · t Bᵀ               (``addmm_``: cuBLAS scales and adds in the GEMM epilogue)

saving ``x`` (PEFT's ``lora_A`` saves it too) and ``t``, and in the backward

    dB = s · dyᵀ t        dt = s · dy B        dA = dtᵀ x
    dx = dy W;  dx += dt A      (``addmm_``; W dequantised as bitsandbytes' own backward does)

Per adapted linear that removes, of (tokens × out) elements moved through memory, 4 in the forward (6 for
bitsandbytes layers: no clone) and 2 in the backward, and of (tokens × in) elements 2 in the backward.

Dtypes follow the unfused PEFT path exactly, under ``torch.autocast`` or not: every matmul runs in the dtype
PEFT's would (the autocast dtype, else the adapter's), PEFT's input cast to the adapter dtype is applied
only where it is not an exact round trip, the output has PEFT's dtype, and gradients flow back through the
same casts (LoRA gradients come out in the parameters' dtype, fp32 for fp32 adapters under bf16 autocast).
Forward outputs match PEFT's to rounding (the epilogue rounds once where PEFT rounds after each op);
gradients match to rounding (bit for bit where ``s`` is a power of two and no epilogue add is involved).
Nothing syncs with the host, so the function can be captured in a CUDA graph.

Supported layers (checked on every call; anything else runs PEFT's own forward): a PEFT LoRA layer
(``peft.tuners.lora.Linear`` or its bitsandbytes ``Linear4bit``, exact types) with exactly one active,
unmerged adapter, no DoRA/variant, no LoRA bias, dropout ``Identity`` / ``p == 0`` / in eval mode, over a
frozen base (``nn.Linear`` or bitsandbytes ``Linear4bit``) with an optional frozen bias.
:func:`lora_linear_fallback_reason` says why a layer is not supported. The same resolution, forward and
backward serve :func:`~fastvla.kernels.lora_mlp.swiglu_down` (``down_proj``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LoraTarget:
    """What the fused path needs to know about one LoRA linear call (resolved on every call).

    Attributes:
        base: the frozen base layer (``nn.Linear`` or bitsandbytes ``Linear4bit``).
        is_bnb: ``base`` is a bitsandbytes ``Linear4bit``.
        peft_bnb: the wrapper is PEFT's bitsandbytes LoRA layer (its own dtype rules under autocast).
        cast_input: PEFT casts the adapter input to ``lora_A``'s dtype.
        lora_a: ``lora_A`` weight (r, in), or ``None`` for a bare base layer.
        lora_b: ``lora_B`` weight (out, r), or ``None``.
        scaling: the adapter scale ``s``.
    """

    base: nn.Module
    is_bnb: bool
    peft_bnb: bool
    cast_input: bool
    lora_a: torch.Tensor | None
    lora_b: torch.Tensor | None
    scaling: float


@dataclass(frozen=True)
class LoraDtypes:
    """The dtypes of one forward, which the backward's casts mirror (names as in the module docstring).

    Attributes:
        x: the layer input's dtype.
        base_mm: dtype of the base matmul (the autocast dtype, bitsandbytes' compute dtype, or the weight's).
        base_out: dtype of ``base(x)``.
        x_l: dtype of the adapter input after PEFT's cast to ``lora_A``'s dtype.
        lora: dtype of the rank-r matmuls and of ``t`` (autocast's, else the adapter's).
        acc: dtype in which PEFT adds the adapter term to ``base(x)``.
        out: the output's dtype.
    """

    x: torch.dtype
    base_mm: torch.dtype
    base_out: torch.dtype
    x_l: torch.dtype
    lora: torch.dtype
    acc: torch.dtype
    out: torch.dtype


# -------------------------------------------------------------------------------------- resolution


def _bnb() -> Any:
    return sys.modules.get("bitsandbytes")  # never import it just to look: nothing is 4-bit without it


def is_bnb_linear4bit(module: nn.Module) -> bool:
    """Whether ``module`` is a bitsandbytes ``Linear4bit`` (without importing bitsandbytes)."""
    bnb = _bnb()
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit)


def _has_hooks(*modules: nn.Module) -> bool:
    """Hooks or a replaced instance ``forward`` (accelerate's device hooks) that calling around would skip."""
    for m in modules:
        own = m.__dict__.get("forward")
        if m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook"):
            return True
        if own is not None and not getattr(own, "_fastvla_kernel", False):  # ours decide per call
            return True
    return False


def _base_reason(base: nn.Module) -> str | None:
    if is_bnb_linear4bit(base):
        state = getattr(base.weight, "quant_state", None)
        if state is None:
            return "bitsandbytes Linear4bit without a quant_state (not quantised yet)"
        if getattr(state, "packing_format_for_cpu", False):
            return "Linear4bit weight repacked for CPU inference (see fastvla.model.guard_cpu_4bit)"
        if base.weight.device.type == "cpu" and base.support_avx512bf16_for_cpu and not base.training:
            return "Linear4bit in eval mode on CPU without guard_cpu_4bit (bitsandbytes would repack it)"
    elif type(base) is not nn.Linear:
        return f"base layer {type(base).__name__} is neither nn.Linear nor bitsandbytes Linear4bit"
    if base.weight.requires_grad:
        return "base weight is trainable (only frozen bases are supported)"
    if base.bias is not None and base.bias.requires_grad:
        return "base bias is trainable (only frozen biases are supported)"
    return None


_PEFT_CLASSES: tuple[type, ...] | None = None  # looked up once PEFT is imported (resolution runs per call)


def peft_lora_classes() -> tuple[type, ...]:
    """PEFT's LoRA Linear classes if PEFT is imported (plain, and bitsandbytes 4-bit where available)."""
    global _PEFT_CLASSES
    if _PEFT_CLASSES is None:
        if "peft" not in sys.modules:
            return ()
        from peft.tuners.lora import Linear as LoraLinear

        try:
            from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
        except ImportError:  # peft without bitsandbytes
            _PEFT_CLASSES = (LoraLinear,)
        else:
            _PEFT_CLASSES = (LoraLinear, LoraLinear4bit)
    return _PEFT_CLASSES


def is_peft_lora_linear(module: nn.Module) -> bool:
    """Whether ``module`` is exactly one of PEFT's LoRA Linear classes (subclasses may change forward)."""
    return type(module) in peft_lora_classes()


def resolve_lora(
    module: nn.Module, *, allow_bare: bool = False, own_hooks_ok: bool = False
) -> tuple[LoraTarget | None, str | None]:
    """The fused path's view of ``module``, or ``(None, reason)`` when it must take the unfused path.

    Args:
        module: a PEFT LoRA Linear (or, with ``allow_bare``, a frozen ``nn.Linear`` / ``Linear4bit``).
        allow_bare: accept a base layer without an adapter (``swiglu_down``'s ``down_proj``).
        own_hooks_ok: ``module``'s own hooks do not matter (the caller runs inside ``module.__call__``).

    Returns:
        ``(target, None)`` or ``(None, reason)``.
    """
    if not own_hooks_ok and _has_hooks(module):
        return None, "layer has forward hooks or a replaced forward"
    if not is_peft_lora_linear(module):
        reason = _base_reason(module)
        if reason is None and type(module).__module__.startswith("peft."):
            reason = f"PEFT layer {type(module).__name__} is not a LoRA Linear"
        if reason is None and not allow_bare:
            reason = f"{type(module).__name__} is not a PEFT LoRA layer"
        if reason is not None:
            return None, reason
        return LoraTarget(module, is_bnb_linear4bit(module), False, False, None, None, 1.0), None
    if module.merged:
        return None, "LoRA adapter is merged into the base weight"
    if module.disable_adapters:
        return None, "adapters are disabled"
    active = [name for name in module.active_adapters if name in module.lora_A]
    if len(active) != 1:
        return None, f"{len(active)} active LoRA adapters ({active}); exactly one is supported"
    name = active[0]
    if name in module.lora_variant or module.use_dora.get(name, False):
        return None, f"adapter '{name}' is a LoRA variant (DoRA, …)"
    lora_a, lora_b, dropout = module.lora_A[name], module.lora_B[name], module.lora_dropout[name]
    if type(lora_a) is not nn.Linear or type(lora_b) is not nn.Linear:
        return None, "lora_A/lora_B are not nn.Linear"
    if lora_a.bias is not None or lora_b.bias is not None:
        return None, "LoRA bias (lora_bias=True) is not supported"
    if lora_a.weight.dtype != lora_b.weight.dtype:
        return None, f"lora_A {lora_a.weight.dtype} and lora_B {lora_b.weight.dtype} dtypes differ"
    if not (
        isinstance(dropout, nn.Identity)
        or (type(dropout) is nn.Dropout and (dropout.p == 0 or not dropout.training))
    ):
        return None, f"LoRA dropout {dropout!r} is active (use lora_dropout=0 or eval mode)"
    base = module.get_base_layer()
    if _has_hooks(base, lora_a, lora_b, dropout):
        return None, "base or adapter layers have forward hooks or a replaced forward"
    reason = _base_reason(base)
    if reason is not None:
        return None, reason
    target = LoraTarget(
        base=base,
        is_bnb=is_bnb_linear4bit(base),
        peft_bnb=type(module) is not peft_lora_classes()[0],
        cast_input=getattr(module, "cast_input_dtype_enabled", True),
        lora_a=lora_a.weight,
        lora_b=lora_b.weight,
        scaling=float(module.scaling[name]),
    )
    return target, None


def lora_linear_fallback_reason(module: nn.Module) -> str | None:
    """Why :func:`lora_linear` would run PEFT's own forward for ``module``; ``None`` if it is supported.

    Args:
        module: a PEFT LoRA layer.

    Returns:
        A one-line reason, or ``None``.
    """
    return resolve_lora(module, own_hooks_ok=True)[1]


# ------------------------------------------------------------------------------------------ helpers


def cast_via(x: torch.Tensor, *dtypes: torch.dtype) -> torch.Tensor:
    """``x.to(dtypes[0]).to(dtypes[1])…`` skipping intermediate casts that are exact (widening) steps.

    Widening is exact, so rounding from the widened value gives the same bits as rounding directly: the
    result equals the full chain's without its copies (e.g. bf16 -> fp32 -> bf16 returns ``x`` itself).
    """
    *mids, out = dtypes
    for mid in mids:
        if torch.promote_types(x.dtype, mid) != mid:  # a narrowing step rounds: keep it
            x = x.to(mid)
    return x.to(out)


def dequantized_weight(base: nn.Module) -> torch.Tensor:
    """The base weight (out_features, in_features) in its stored float dtype (NF4/FP4 dequantised)."""
    if is_bnb_linear4bit(base):
        weight = base.weight
        return _bnb().functional.dequantize_4bit(weight.view(-1, 1), weight.quant_state)
    return base.weight


def _lora_dtype(x_l: torch.dtype, adapter: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype ``F.linear(x_l, A)`` computes in: autocast's for float inputs under autocast."""
    if torch.is_autocast_enabled(device_type) and x_l in (torch.float32, torch.float16, torch.bfloat16):
        return torch.get_autocast_dtype(device_type)
    return adapter


# ---------------------------------------------------------------------------------- forward/backward


def lora_forward(
    x: torch.Tensor, target: LoraTarget
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, LoraDtypes]:
    """``y = base(x) + s · (x Aᵀ) Bᵀ`` in PEFT's dtypes with the add and scale in the GEMM epilogue.

    Runs under the caller's autocast state (the base layer sees it exactly as in PEFT's forward).

    Args:
        x: the layer input, ``(..., in_features)``.
        target: from :func:`resolve_lora`.

    Returns:
        ``(y, t, x_lora, dtypes)``: the output, ``t = x Aᵀ`` and the adapter input in the rank-r matmul's
        dtype (both ``None`` without an adapter; what the backward needs), and the dtypes of this call.
    """
    base = target.base
    if target.is_bnb:
        base_out = type(base).forward(base, x)  # class forward: no instance patches (nf4 inference)
        mm = base.compute_dtype or x.dtype
    else:
        base_out = F.linear(x, base.weight, base.bias)
        mm = base_out.dtype  # autocast dtype, or the weight's
    if target.lora_a is None:
        d = LoraDtypes(x.dtype, mm, base_out.dtype, x.dtype, x.dtype, base_out.dtype, base_out.dtype)
        return base_out, None, None, d
    autocast = torch.is_autocast_enabled(x.device.type)
    x_l = x.dtype
    if target.cast_input and not (target.peft_bnb and autocast):
        x_l = target.lora_a.dtype  # PEFT's _cast_input_dtype
    ct = _lora_dtype(x_l, target.lora_a.dtype, x.device.type)
    acc = torch.promote_types(base_out.dtype, ct)
    # PEFT's bnb layer under autocast returns base + adapter unconverted; everything else base_out's dtype
    out = acc if target.peft_bnb and autocast else base_out.dtype
    d = LoraDtypes(x.dtype, mm, base_out.dtype, x_l, ct, acc, out)
    with torch.autocast(x.device.type, enabled=False):
        x_c = cast_via(x, x_l, ct)  # what PEFT's lora_A multiplies (and saves)
        t = F.linear(x_c, target.lora_a.to(ct))  # (..., r)
        y = base_out if base_out.dtype == acc else base_out.to(acc)  # fresh: safe to add into
        if not y.is_contiguous():
            y = y.contiguous()
        y2, t2 = y.view(-1, y.shape[-1]), t.reshape(-1, t.shape[-1])  # (tokens, out), (tokens, r)
        y2.addmm_(t2.to(acc), target.lora_b.to(acc).t(), alpha=target.scaling)
    return y.to(out), t, x_c, d


def lora_backward(
    dy: torch.Tensor,
    t: torch.Tensor | None,
    x_lora: Any,
    target: LoraTarget,
    d: LoraDtypes,
    need_x: bool,
    need_a: bool,
    need_b: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`lora_forward`, back through the same casts as PEFT's autograd graph.

    Args:
        dy: output gradient, ``(..., out_features)``.
        t: the saved ``x Aᵀ`` (``None`` without an adapter).
        x_lora: the saved adapter input in the rank-r dtype, or a callable returning it (recomputed).
        target: as in the forward.
        d: the forward's dtypes.
        need_x, need_a, need_b: which gradients to compute.

    Returns:
        ``(dx, dA, dB)`` as 2-D ``(tokens, in)``, ``(r, in)``, ``(out, r)``; ``None`` where not needed.
    """
    dx = d_a = d_b = None
    with torch.autocast(dy.device.type, enabled=False):
        dy2 = dy.reshape(-1, dy.shape[-1])  # (tokens, out)
        if need_x:  # y = (base_out -> acc) -> out, base_out = ((x -> mm) Wᵀ) -> base_out: back through both
            d_base = cast_via(dy2, d.acc, d.base_out, d.base_mm)
            dx = d_base @ dequantized_weight(target.base).to(d.base_mm)  # (tokens, in)
        if t is None:
            return (None if dx is None else dx.to(d.x)), None, None
        ct, s = d.lora, target.scaling
        t2 = t.reshape(-1, t.shape[-1])  # (tokens, r)
        d_out = cast_via(dy2, d.acc, ct)  # grad of the adapter term, in its dtype (exact where no cast)
        if need_b:
            d_b = (d_out.t() @ t2).mul_(s).to(target.lora_b.dtype)  # (out, r)
        if need_a or need_x:
            dt = (d_out @ target.lora_b.to(ct)).mul_(s)  # (tokens, r)
        if need_a:
            x_c = x_lora() if callable(x_lora) else x_lora
            d_a = (dt.t() @ x_c.reshape(-1, x_c.shape[-1])).to(target.lora_a.dtype)  # (r, in)
            del x_c
        if need_x:
            a_c = target.lora_a.to(ct)
            if dx.dtype == ct == d.x and torch.promote_types(ct, d.x_l) == d.x_l:
                dx.addmm_(dt, a_c)  # the add in the GEMM epilogue (the casts back through x_l are exact)
            else:
                dx = dx.to(d.x) + cast_via(dt @ a_c, d.x_l, d.x)
    return dx, d_a, d_b


class _LoraLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, target: LoraTarget):  # lora_a/lora_b: inputs so autograd sees them
        y, t, x_c, d = lora_forward(x, target)
        ctx.target, ctx.dtypes, ctx.x_shape = target, d, x.shape
        ctx.save_for_backward(x_c, t)
        return y

    @staticmethod
    def backward(ctx, dy):
        x_c, t = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        dx, d_a, d_b = lora_backward(dy, t, x_c, ctx.target, ctx.dtypes, need_x, need_a, need_b)
        return None if dx is None else dx.view(ctx.x_shape), d_a, d_b, None


def lora_linear(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``module(x)`` for a PEFT LoRA linear, with the adapter's scale and add in the GEMM epilogues.

    Runs PEFT's own forward (``type(module).forward``) when nothing needs gradients or the layer is not
    supported (see the module docstring and :func:`lora_linear_fallback_reason`). Call it from inside
    ``module.forward`` (what :func:`~fastvla.kernels.apply_kernels` binds): ``module``'s own hooks are
    left to ``module.__call__``.

    Args:
        x: the layer input, ``(..., in_features)``.
        module: a PEFT LoRA Linear (plain or bitsandbytes 4-bit).

    Returns:
        The layer output, in the dtype PEFT's forward returns.

    Example:
        >>> import peft
        >>> base = nn.Sequential(nn.Linear(64, 32)).requires_grad_(False)
        >>> layer = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["0"])).base_model.model[0]
        >>> lora_linear(torch.randn(2, 8, 64, requires_grad=True), layer).shape
        torch.Size([2, 8, 32])
    """
    if not torch.is_grad_enabled():  # first: inference pays one check, not the resolution
        return type(module).forward(module, x)
    target, _ = resolve_lora(module, own_hooks_ok=True)
    if target is None or not (x.requires_grad or target.lora_a.requires_grad or target.lora_b.requires_grad):
        return type(module).forward(module, x)
    return _LoraLinearFunction.apply(x, target.lora_a, target.lora_b, target)
