"""The examples in the docstrings of fastvla.eval, the policies and the config modules run as shown."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fastvla.eval.metrics",
    "fastvla.eval.rollout",
    "fastvla.eval.config",
    "fastvla.policies.base",
    "fastvla.policies.loading",
    "fastvla.policies.observation_map",
    "fastvla.datasets.config",
    "fastvla.serving.config",
    "fastvla.utils.config",
    "fastvla.utils.entry_points",
    "fastvla.utils.flags",
    "fastvla.utils.image",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_top_level_lazy_export() -> None:
    import fastvla
    from fastvla.eval import evaluate

    assert fastvla.evaluate is evaluate


def test_old_import_paths_of_the_moved_policy_names() -> None:
    from fastvla import eval as fv_eval
    from fastvla import policies
    from fastvla.eval import baselines

    for name in ("BASELINES", "Policy", "RandomPolicy", "ScriptedPolicy", "load_policy"):
        assert getattr(baselines, name) is getattr(policies, name) is getattr(fv_eval, name)
