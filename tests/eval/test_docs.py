"""The examples in the docstrings of fastvla.eval run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["fastvla.eval.metrics", "fastvla.eval.baselines", "fastvla.eval.rollout"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_top_level_lazy_export() -> None:
    import fastvla
    from fastvla.eval import evaluate

    assert fastvla.evaluate is evaluate
