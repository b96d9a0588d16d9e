"""``load_policy``: a policy from a baseline name, a policy server address or a checkpoint folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastvla.policies.base import Policy
from fastvla.policies.baselines import BASELINES, RandomPolicy, ScriptedPolicy


def load_policy(
    spec: Any,
    *,
    load_in_4bit: bool = False,
    device: str | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Resolve a policy from a name, a server address or a checkpoint path.

    Args:
        spec: ``"scripted"`` or ``"random"`` (baselines), ``"ws://host:port"`` / ``"wss://..."`` (a
            policy served by ``fastvla serve``), the folder of a trained FastVLA policy, or an object that
            already is a policy (returned unchanged).
        load_in_4bit: Load a FastVLA checkpoint with NF4 weights.
        device: Torch device of a FastVLA checkpoint (``None``: CUDA when available).
        seed: Seed of the ``random`` baseline.
        **kwargs: Passed on to ``FastVLAPolicy.from_pretrained`` (e.g. ``obs_map``, ``n_action_steps``);
            ignored by the baselines, which read the env directly.

    Returns:
        An object with ``reset()`` and ``select_action(obs, task=None)``.

    Example:
        >>> from fastvla.policies import load_policy
        >>> type(load_policy("random", seed=1)).__name__
        'RandomPolicy'
    """
    if not isinstance(spec, str):
        if isinstance(spec, Policy):
            return spec
        raise TypeError(
            f"policy {spec!r} has no reset()/select_action(obs, task=None); pass an object with both, "
            f"a baseline name {BASELINES}, a ws:// address or a checkpoint path"
        )
    if spec == "scripted":
        return ScriptedPolicy()
    if spec == "random":
        return RandomPolicy(seed=seed)
    if spec.startswith(("ws://", "wss://")):
        from fastvla.serving.client import RemotePolicy

        return RemotePolicy(spec)
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"policy {spec!r} is not a baseline {BASELINES}, a ws:// or wss:// server address, nor a "
            "checkpoint folder; pass e.g. 'scripted' or the output folder of `fastvla train`"
        )
    from fastvla.policies.fastvla_policy import FastVLAPolicy  # torch: only for checkpoints

    return FastVLAPolicy.from_pretrained(spec, load_in_4bit=load_in_4bit, device=device, **kwargs)
