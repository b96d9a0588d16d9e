"""The ``scripted`` and ``random`` baseline policies (:class:`~fastvla.policies.base.BasePolicy`).

Both read the env they are evaluated in through the ``bind_env`` hook, so they work in any env
:func:`fastvla.eval.evaluate` runs: the scripted one needs an ``expert_action()`` method (all
``fastvla.envs`` tasks have one), the random one only the action space.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastvla.errors import UserError
from fastvla.policies.base import BasePolicy

BASELINES = ("scripted", "random")


class NoExpertError(UserError, AttributeError):
    """The env has no ``expert_action()`` method (the message says what to use instead)."""


def expert_actions(vec_env: Any, fix: str) -> np.ndarray:
    """Every env's ``expert_action()`` of a vector env, stacked into ``(B, A)`` float32.

    Args:
        vec_env: a Gymnasium vector env (sync or async: reached through ``vec_env.call``).
        fix: what to do when the env has no expert, appended to the error.

    Raises:
        NoExpertError: the env has no ``expert_action()``.
    """
    try:
        actions = vec_env.call("expert_action")
    except AttributeError as err:
        raise NoExpertError(f"the env has no expert_action() ({err}); {fix}") from err
    return np.stack([np.asarray(a, dtype=np.float32) for a in actions])


class ScriptedPolicy(BasePolicy):
    """The task's scripted expert: ``env.unwrapped.expert_action()`` of every env of the vector env.

    Works with any env exposing an ``expert_action()`` method (all ``fastvla.envs`` tasks do), through
    ``vec_env.call`` on sync and async vector envs alike.

    Example:
        >>> from fastvla.eval import evaluate
        >>> from fastvla.policies import ScriptedPolicy
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
        return expert_actions(
            self._vec_env,
            "the 'scripted' baseline needs one: use policy='random' or a trained policy instead",
        )


class RandomPolicy(BasePolicy):
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
