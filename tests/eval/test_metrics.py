"""Wilson interval against published values, and the LeRobot-style aggregation."""

from __future__ import annotations

import math

import pytest

from fastvla.eval.metrics import EpisodeRecord, aggregate, summarize, wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Reference values: statsmodels.stats.proportion.proportion_confint(k, n, method="wilson"),
        # and Newcombe (1998), Table I (e.g. 0/10 -> [0, 0.2775], 81/263 -> [0.2553, 0.3662]).
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (8, 10, 0.4902, 0.9433),
        (80, 100, 0.7112, 0.8666),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
    ],
)
def test_wilson_interval_matches_reference_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_edges_and_errors() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(7, 7)[1] == 1.0
    # The interval always contains the point estimate and narrows with n.
    assert wilson_interval(10, 20)[1] - wilson_interval(10, 20)[0] > wilson_interval(50, 100)[1] - 0.5
    with pytest.raises(ValueError, match="successes=11, n=10"):
        wilson_interval(11, 10)


def _rec(i: int, success: bool, task: str, group: str = "g", r: float = 1.0) -> EpisodeRecord:
    return EpisodeRecord(i, 100 + i, success, 10 + i, r * (i + 1), r, task, group)


def test_summarize_and_aggregate_layout() -> None:
    eps = [_rec(0, True, "a"), _rec(1, False, "b"), _rec(2, True, "a"), _rec(3, True, "b", group="h")]
    s = summarize(eps)
    assert s["pc_success"] == 75.0 and s["n_success"] == 3 and s["n_episodes"] == 4
    assert s["avg_sum_reward"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert s["avg_length"] == pytest.approx(11.5)
    assert s["success_ci95"] == pytest.approx(list(wilson_interval(3, 4)))

    info = aggregate(eps, eval_s=2.0)
    assert set(info) == {"per_task", "per_group", "overall", "per_episode"}
    tasks = {(t["task_group"], t["task"]): t for t in info["per_task"]}
    assert set(tasks) == {("g", "a"), ("g", "b"), ("h", "b")}
    assert tasks[("g", "a")]["metrics"]["successes"] == [True, True]
    assert tasks[("g", "a")]["metrics"]["seeds"] == [100, 102]
    assert tasks[("g", "b")]["aggregated"]["pc_success"] == 0.0
    assert info["per_group"]["g"]["n_episodes"] == 3 and info["per_group"]["h"]["pc_success"] == 100.0
    assert info["overall"]["eval_s"] == 2.0 and info["overall"]["eval_ep_s"] == 0.5
    assert [e["seed"] for e in info["per_episode"]] == [100, 101, 102, 103]
    assert math.isnan(summarize([])["pc_success"])


def test_load_policy_resolves_names_and_rejects_unknown_specs() -> None:
    from fastvla.eval import RandomPolicy, ScriptedPolicy, load_policy

    assert isinstance(load_policy("scripted"), ScriptedPolicy)
    assert isinstance(load_policy("random"), RandomPolicy)
    own = ScriptedPolicy()
    assert load_policy(own) is own
    with pytest.raises(FileNotFoundError, match=r"'scripte' is not a baseline \('scripted', 'random'\)"):
        load_policy("scripte")
    with pytest.raises(TypeError, match="no reset"):
        load_policy(object())
