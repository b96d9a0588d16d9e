"""Closed-loop evaluation of policies in Gymnasium envs: seeded vectorised rollouts, metrics, videos.

Example:
    >>> from fastvla.eval import evaluate
    >>> result = evaluate(
    ...     "scripted", "fastvla/PickCube-v0", n_episodes=10, out_dir="outputs/eval"
    ... )  # doctest: +SKIP
    >>> print(result.success_rate, result.success_ci95)  # doctest: +SKIP

``fastvla eval --policy scripted --env fastvla/PickCube-v0 --episodes 10 --out outputs/eval`` does the same
from the command line.
"""

from __future__ import annotations

from fastvla.eval.config import EvalConfig, EvalPipelineConfig
from fastvla.eval.metrics import EpisodeRecord, aggregate, summarize, wilson_interval
from fastvla.eval.report import comparison_table, print_summary
from fastvla.eval.rollout import EvalResult, evaluate, run_group
from fastvla.eval.vector import EnvFactory, make_vector_env
from fastvla.policies import BASELINES, Policy, RandomPolicy, ScriptedPolicy, load_policy

__all__ = [
    "BASELINES",
    "EnvFactory",
    "EpisodeRecord",
    "EvalConfig",
    "EvalPipelineConfig",
    "EvalResult",
    "Policy",
    "RandomPolicy",
    "ScriptedPolicy",
    "aggregate",
    "comparison_table",
    "evaluate",
    "load_policy",
    "make_vector_env",
    "print_summary",
    "run_group",
    "summarize",
    "wilson_interval",
]
