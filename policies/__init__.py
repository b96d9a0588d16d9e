"""Policies: :class:`FastVLAPolicy` turns Gymnasium observations into env actions with a FastVLA model.

Any object with ``reset()`` and ``select_action(obs, task=None)`` is a policy for ``fastvla.eval``.
"""

from fastvla.policies.ensemble import ActionQueue, TemporalEnsembler
from fastvla.policies.fastvla_policy import FastVLAPolicy
from fastvla.policies.observation_map import ObservationMap

__all__ = ["ActionQueue", "FastVLAPolicy", "ObservationMap", "TemporalEnsembler"]
