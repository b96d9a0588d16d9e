"""The one policy protocol of FastVLA (after openpi's ``openpi_client/base_policy.py``).

A policy turns a batch of observations from a Gymnasium (vector) env into actions:

- ``reset()``: clear per-episode state (action queues, temporal ensembles); called at every episode start.
- ``select_action(obs, task=None) -> np.ndarray``: actions ``(B, A)`` in env units for batched
  observations (``(A,)`` for an unbatched one), ``task`` the instruction(s).

:class:`FastVLAPolicy`, :class:`~fastvla.serving.client.RemotePolicy` and the ``scripted``/``random``
baselines all implement it; any object with these two methods is a policy too (:class:`Policy` is a
runtime-checkable ``Protocol``). Optional hooks let a policy see the rollout it is part of;
:func:`fastvla.eval.evaluate` calls them when they exist:

- ``bind_env(vec_env)``: once with the Gymnasium vector env before the first episode (the scripted
  baseline reaches the envs' ``expert_action`` through it; the random one gets the action space).
- ``seed_episodes(seeds)``: after ``reset()`` with the reset seed of each batch row, so a stochastic policy
  draws its randomness per episode and gives the same outcome whatever the batch size.
- ``check_action_space(space)``: with the single-env action space (``FastVLAPolicy`` checks the action
  size and clips to the bounds).

Example:
    >>> import numpy as np
    >>> class Zero(BasePolicy):
    ...     def select_action(self, obs, task=None):
    ...         return np.zeros((len(obs["agent_pos"]), 2), np.float32)
    >>> isinstance(Zero(), Policy), Zero().select_action({"agent_pos": np.zeros((3, 4))}).shape
    (True, (3, 2))
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """What :func:`fastvla.eval.evaluate`, ``fastvla serve`` and the ROS 2 bridge need from a policy."""

    def reset(self) -> None:
        """Clear per-episode state (action queues, temporal ensembles); called before each episode."""

    def select_action(self, obs: Any, task: Sequence[str] | str | None = None) -> np.ndarray:
        """Actions ``(B, A)`` in env units for a batch of observations from a vector env."""


class BasePolicy(abc.ABC):
    """Base class of FastVLA's policies: :meth:`select_action` to implement, :meth:`reset` a no-op."""

    def reset(self) -> None:  # noqa: B027 - a stateless policy has nothing to clear
        """Clear per-episode state; stateless policies keep this no-op."""

    @abc.abstractmethod
    def select_action(self, obs: Any, task: Sequence[str] | str | None = None) -> np.ndarray:
        """Actions ``(B, A)`` in env units for a batch of observations from a vector env."""
