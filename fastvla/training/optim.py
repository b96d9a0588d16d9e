"""Optimisers and learning-rate schedules.

Trainable parameters fall in two families with their own peak learning rate: LoRA adapters and any
other pretrained parameters (``optim.lr``), and the freshly initialised modules — fusion, projector,
action head, ... (``optim.head_lr``). Each family is split again into decayed (matrices) and undecayed
(biases, norms, embeddings) groups. The schedule is linear warm-up then cosine (or linear, or constant)
decay to ``min_lr_ratio`` of the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fastvla.training.config import OptimConfig
from fastvla.training.offload import CPUOffloadAdamW

_NO_DECAY_HINTS = ("bias", "norm", "embed", "ln_", "layernorm")


def is_head_parameter(name: str, head_modules: tuple[str, ...]) -> bool:
    """Whether parameter ``name`` belongs to a freshly initialised module.

    A pattern is a dotted module path (``"action_head"``, ``"vision.film_out"``) matched as a whole-component
    substring, so wrapper prefixes (``base_model.model.`` from PEFT, ``module.`` from DDP) do not matter.
    """
    padded = f".{name}."
    return any(f".{pattern}." in padded for pattern in head_modules)


def _decays(name: str, param: nn.Parameter) -> bool:
    lowered = name.lower()
    return param.ndim >= 2 and not any(h in lowered for h in _NO_DECAY_HINTS)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Parameter groups of ``model``'s trainable parameters (see module docstring).

    Each group carries a ``"name"`` key (``"backbone"``/``"head"`` x ``"decay"``/``"no_decay"``) used in
    logs; empty groups are omitted.

    Raises:
        ValueError: the model has no trainable parameter.
    """
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        family = "head" if is_head_parameter(name, cfg.head_modules) else "backbone"
        buckets.setdefault((family, _decays(name, param)), []).append(param)
    if not buckets:
        raise ValueError(
            "the model has no trainable parameters: check --model.lora and the LoRA target modules"
        )
    groups = []
    for (family, decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": cfg.head_lr if family == "head" else cfg.lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "name": f"{family}/{'decay' if decay else 'no_decay'}",
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, offload: bool = False) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` over :func:`param_groups`.

    Args:
        model: the model whose trainable parameters are optimised.
        cfg: the optimiser settings.
        offload: AdamW with its state and update on the CPU
            (:class:`~fastvla.training.offload.CPUOffloadAdamW`).

    Raises:
        RuntimeError: an 8-bit optimiser was asked for and bitsandbytes is not importable.
        ValueError: ``offload`` with an optimiser other than AdamW.
    """
    groups = param_groups(model, cfg)
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if offload:
        if cfg.optimizer != "adamw":
            raise ValueError(f"CPU offload is for AdamW; optim.optimizer is {cfg.optimizer}")

        return CPUOffloadAdamW(groups, **kwargs)
    if cfg.optimizer == "adamw":
        # foreach is the fast path on CPU and GPU; fused needs all-CUDA params.
        return torch.optim.AdamW(groups, **kwargs)
    try:
        import bitsandbytes as bnb  # deferred: optional dependency (bitsandbytes; loads its native library)
    except Exception as err:  # ImportError, or a broken native library
        raise RuntimeError(
            f"--optim.optimizer {cfg.optimizer} needs bitsandbytes, which failed to import ({err}); "
            "install it (`pip install bitsandbytes`) or use --optim.optimizer adamw"
        ) from err
    cls = bnb.optim.AdamW8bit if cfg.optimizer == "adamw8bit" else bnb.optim.PagedAdamW8bit
    return cls(groups, **kwargs)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak learning rate for update ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.scheduler == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + decay schedule; call ``step()`` once per optimizer update."""
    fn: Callable[[int], float] = lambda step: lr_factor(step, total_steps, cfg)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
