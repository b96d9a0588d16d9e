"""Evaluation metrics: per-episode records, success rate with a Wilson interval, LeRobot-style aggregates.

The aggregate layout follows LeRobot's ``eval_info.json`` (``lerobot-eval``): a ``per_task`` list whose
entries hold raw per-episode ``metrics`` lists, a ``per_group`` dict (one group per evaluated env) and an
``overall`` dict with ``pc_success``, ``avg_sum_reward``, ``avg_max_reward``, ``n_episodes``, ``eval_s``,
``eval_ep_s`` and ``video_paths``. FastVLA adds the Wilson 95% interval, mean episode length and a
``per_episode`` list of :class:`EpisodeRecord` dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Two-sided 95% normal quantile, Φ⁻¹(0.975).
Z_95 = 1.959963984540054


@dataclass
class EpisodeRecord:
    """Outcome of one evaluation episode.

    Attributes:
        episode_index: Index of the episode within its env group (0-based); its reset seed is
            ``seed + episode_index``.
        seed: The seed passed to ``env.reset`` for this episode.
        success: Whether ``info["is_success"]`` was true at any step of the episode.
        length: Number of ``env.step`` calls in the episode.
        sum_reward: Sum of rewards over the episode (the return).
        max_reward: Largest single-step reward of the episode.
        task: The language instruction (``info["task"]``), or ``""`` when the env gives none.
        group: Name of the env the episode ran in (its Gymnasium id or factory name).
        terminated: Whether the episode ended by termination (rather than truncation or the step cap).
        video_path: Path of the episode's video relative to the output folder, when one was written.
    """

    episode_index: int
    seed: int
    success: bool
    length: int
    sum_reward: float
    max_reward: float
    task: str
    group: str
    terminated: bool = False
    video_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the record."""
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    For ``k`` successes in ``n`` trials and ``p = k / n``::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is not degenerate at 0 % or 100 %
    success, which matters for the small episode counts of robot evaluations.

    Args:
        successes: Number of successful episodes ``k`` (0 ≤ k ≤ n).
        n: Number of episodes.
        z: Normal quantile of the confidence level (1.96 for 95 %).

    Returns:
        ``(low, high)`` as fractions in [0, 1]; ``(0.0, 1.0)`` when ``n == 0``.

    Example:
        >>> [round(x, 4) for x in wilson_interval(5, 10)]
        [0.2366, 0.7634]
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # k = 0 and k = n give exactly 0 and 1 analytically; avoid 0.9999999999999999 from rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarize(episodes: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """Aggregate metrics of a set of episodes (LeRobot key names plus FastVLA extras).

    Returns:
        A dict with ``pc_success`` (percent), ``success_rate`` (fraction), ``success_ci95`` (Wilson
        interval as fractions), ``n_success``, ``n_episodes``, ``avg_sum_reward``, ``avg_max_reward``,
        ``avg_length`` and ``video_paths``.
    """
    n = len(episodes)
    k = sum(bool(e.success) for e in episodes)
    low, high = wilson_interval(k, n)
    return {
        "pc_success": 100.0 * k / n if n else float("nan"),
        "success_rate": k / n if n else float("nan"),
        "success_ci95": [low, high],
        "n_success": k,
        "n_episodes": n,
        "avg_sum_reward": _mean([e.sum_reward for e in episodes]),
        "avg_max_reward": _mean([e.max_reward for e in episodes]),
        "avg_length": _mean([float(e.length) for e in episodes]),
        "video_paths": [e.video_path for e in episodes if e.video_path],
    }


def _group_by(episodes: Iterable[EpisodeRecord], key: str) -> dict[str, list[EpisodeRecord]]:
    groups: dict[str, list[EpisodeRecord]] = {}
    for e in episodes:
        groups.setdefault(getattr(e, key), []).append(e)
    return groups


def aggregate(episodes: Sequence[EpisodeRecord], eval_s: float) -> dict[str, Any]:
    """Build the metric part of ``eval_info.json`` in LeRobot's layout.

    ``per_task`` has one entry per (env group, instruction) pair, so an env that samples several
    instructions gets a per-instruction breakdown; ``per_group`` has one entry per env.

    Args:
        episodes: All episode records, in evaluation order.
        eval_s: Wall-clock seconds the evaluation took.

    Returns:
        ``{"per_task": [...], "per_group": {...}, "overall": {...}, "per_episode": [...]}``.
    """
    per_task = []
    for group, group_eps in _group_by(episodes, "group").items():
        for task_id, (task, task_eps) in enumerate(_group_by(group_eps, "task").items()):
            per_task.append(
                {
                    "task_group": group,
                    "task_id": task_id,
                    "task": task,
                    "metrics": {
                        "sum_rewards": [e.sum_reward for e in task_eps],
                        "max_rewards": [e.max_reward for e in task_eps],
                        "successes": [bool(e.success) for e in task_eps],
                        "lengths": [e.length for e in task_eps],
                        "seeds": [e.seed for e in task_eps],
                        "video_paths": [e.video_path for e in task_eps if e.video_path],
                    },
                    "aggregated": summarize(task_eps),
                }
            )
    per_group = {group: summarize(eps) for group, eps in _group_by(episodes, "group").items()}
    overall = summarize(episodes)
    overall["eval_s"] = float(eval_s)
    overall["eval_ep_s"] = float(eval_s) / max(1, len(episodes))
    return {
        "per_task": per_task,
        "per_group": per_group,
        "overall": overall,
        "per_episode": [e.to_dict() for e in episodes],
    }
