"""Moved: the policy protocol is :mod:`fastvla.policies.base`, the baselines :mod:`fastvla.policies.baselines`
and ``load_policy`` :mod:`fastvla.policies.loading`. These names stay importable from here.
"""

from fastvla.policies.base import Policy
from fastvla.policies.baselines import BASELINES, RandomPolicy, ScriptedPolicy
from fastvla.policies.loading import load_policy

__all__ = ["BASELINES", "Policy", "RandomPolicy", "ScriptedPolicy", "load_policy"]
