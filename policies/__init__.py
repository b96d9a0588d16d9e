"""Policies: one protocol (:mod:`fastvla.policies.base`), the FastVLA policy, baselines, ``load_policy``.

Any object with ``reset()`` and ``select_action(obs, task=None)`` is a policy. :class:`FastVLAPolicy` turns
Gymnasium observations into env actions with a FastVLA model; it (and the torch import it needs) loads on
first use, so the protocol, the baselines and ``RemotePolicy`` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastvla.policies.base import BasePolicy, Policy
from fastvla.policies.baselines import BASELINES, RandomPolicy, ScriptedPolicy
from fastvla.policies.ensemble import ActionQueue, TemporalEnsembler
from fastvla.policies.loading import load_policy
from fastvla.policies.observation_map import ObservationMap

__all__ = [
    "BASELINES",
    "ActionQueue",
    "BasePolicy",
    "FastVLAPolicy",
    "ObservationMap",
    "Policy",
    "RandomPolicy",
    "ScriptedPolicy",
    "TemporalEnsembler",
    "load_policy",
]


def __getattr__(name: str) -> Any:
    # Deferred for start-up time: FastVLAPolicy imports torch and transformers.
    if name == "FastVLAPolicy":
        return importlib.import_module("fastvla.policies.fastvla_policy").FastVLAPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
