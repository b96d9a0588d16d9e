"""The policy protocol of ``fastvla.eval``, the ``scripted`` and ``random`` baselines, and ``load_policy``.

Any object with ``reset()`` and ``select_action(obs, task=None) -> np.ndarray`` of shape ``(B, A)`` is a
policy. Two optional hooks let a policy see the rollout it is part of; :func:`fastvla.eval.evaluate`
calls them when they exist:

- ``bind_env(vec_env)``: called once with the Gymnasium vector env before the first episode (the
  scripted baseline uses it to reach the envs' ``expert_action``; the random one to get the action space).
- ``seed_episodes(seeds)``: called after ``reset()`` with the reset seed of each batch row, so a
  stochastic policy can draw its randomness per episode and give the same outcome whatever the batch size.
- ``check_action_space(space)``: called with the single-env action space (``FastVLAPolicy`` checks the
  action size and clips to the bounds).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

BASELINES = ("scripted", "random")


@runtime_checkable
class Policy(Protocol):
    """What :func:`fastvla.eval.evaluate` needs from a policy."""

    def reset(self) -> None:
        """Clear per-episode state (action queues, temporal ensembles); called before each batch."""

    def select_action(self, obs: Any, task: Sequence[str] | str | None = None) -> np.ndarray:
        """Actions ``(B, A)`` in env units for a batch of observations from a vector env."""


class ScriptedPolicy:
    """The task's scripted expert: ``env.unwrapped.expert_action()`` of every env of the vector env.

    Works with any env exposing an ``expert_action()`` method (all ``fastvla.envs`` tasks do), through
    ``vec_env.call`` on sync and async vector envs alike.

    Example:
        >>> from fastvla.eval import evaluate, ScriptedPolicy
        >>> result = evaluate(ScriptedPolicy(), "fastvla/ReachCube-v0", n_episodes=2)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._vec_env: Any = None

    def bind_env(self, vec_env: Any) -> None:
        """Remember the vector env whose experts are asked for actions."""
        self._vec_env = vec_env

    def reset(self) -> None:
        """Nothing to clear: each env resets its expert's phase on ``env.reset``."""

    def select_action(self, obs: Any, task: Sequence[str] | str | None = None) -> np.ndarray:
        """Stack the experts' actions of all batch rows into ``(B, A)``."""
        if self._vec_env is None:
            raise RuntimeError("ScriptedPolicy is not bound to an env; run it through fastvla.eval.evaluate")
        try:
            actions = self._vec_env.call("expert_action")
        except AttributeError as err:
            raise AttributeError(
                f"the 'scripted' baseline needs env.unwrapped.expert_action(); this env has none ({err}). "
                "Use policy='random' or a trained policy instead."
            ) from err
        return np.stack([np.asarray(a, dtype=np.float32) for a in actions])


class RandomPolicy:
    """Uniform samples of the action space, drawn from one RNG per episode.

    Each batch row's sampler is seeded from ``(seed, episode seed)``, so an episode gets the same random
    actions whatever the batch size or its position in the batch.

    Args:
        seed: Base seed of the sampler.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._space: Any = None
        self._row_spaces: list[Any] = []

    def bind_env(self, vec_env: Any) -> None:
        """Take the action space of one env of the vector env."""
        self._space = vec_env.single_action_space

    def reset(self) -> None:
        """Forget the per-row samplers; :meth:`seed_episodes` makes new ones."""
        self._row_spaces = []

    def seed_episodes(self, seeds: Sequence[int]) -> None:
        """Create one sampler per batch row, seeded from the row's episode seed."""
        if self._space is None:
            raise RuntimeError("RandomPolicy is not bound to an env; run it through fastvla.eval.evaluate")
        self._row_spaces = []
        for s in seeds:
            space = copy.deepcopy(self._space)
            space.seed(int(np.random.SeedSequence([self.seed, int(s)]).generate_state(1)[0]))
            self._row_spaces.append(space)

    def select_action(self, obs: Any, task: Sequence[str] | str | None = None) -> np.ndarray:
        """One action sample per batch row, ``(B, A)``."""
        if not self._row_spaces:
            raise RuntimeError("RandomPolicy.seed_episodes must be called before select_action")
        return np.stack([np.asarray(space.sample(), dtype=np.float32) for space in self._row_spaces])


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
        >>> from fastvla.eval import load_policy
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
    from fastvla.policies import FastVLAPolicy

    return FastVLAPolicy.from_pretrained(spec, load_in_4bit=load_in_4bit, device=device, **kwargs)
