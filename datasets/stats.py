"""Per-episode statistics and their aggregation, in LeRobot's layout.

Each feature gets ``{"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}`` arrays:
numeric features per channel, image features per colour channel with shape ``(3, 1, 1)`` and values in
[0, 1]. Dataset statistics aggregate episode statistics the way lerobot does: counts add up, means are
count-weighted, variances combine with the between-episode spread, and quantiles are count-weighted means
of the episodes' quantiles (an approximation lerobot also makes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)

Stats = dict[str, dict[str, np.ndarray]]


def numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of a numeric feature over frames: ``values`` is ``(N,)`` or ``(N, C)``."""
    x = np.asarray(values, dtype=np.float64)
    x = x.reshape(len(x), -1)  # (N, C)
    stats = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
        "count": np.array([len(x)], dtype=np.int64),
    }
    for key, q in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)):
        stats[key] = q
    return stats


def image_stats(frames: np.ndarray, count: int | None = None) -> dict[str, np.ndarray]:
    """Per-channel statistics of uint8 frames ``(N, H, W, 3)``, in [0, 1], shaped ``(3, 1, 1)``.

    Args:
        frames: a sample of the episode's frames.
        count: the episode's frame count (defaults to ``len(frames)``); lerobot also samples frames.
    """
    x = np.asarray(frames, dtype=np.float64).reshape(-1, 3) / 255.0  # (N*H*W, 3)
    stats = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
    }
    for key, q in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)):
        stats[key] = q
    out = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    out["count"] = np.array([count if count is not None else len(frames)], dtype=np.int64)
    return {k: out[k] for k in STAT_KEYS}


def aggregate_stats(per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> Stats:
    """Combine per-episode statistics into dataset statistics (lerobot's ``aggregate_stats``)."""
    keys: list[str] = []
    for ep in per_episode:
        keys.extend(k for k in ep if k not in keys)
    return {key: _aggregate_feature([ep[key] for ep in per_episode if key in ep]) for key in keys}


def _aggregate_feature(stats: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in stats])
    total = counts.sum()
    means = np.stack([np.asarray(s["mean"], np.float64) for s in stats])
    weights = (counts / total).reshape(-1, *([1] * (means.ndim - 1)))
    mean = (means * weights).sum(axis=0)
    variances = np.stack([np.asarray(s["std"], np.float64) ** 2 for s in stats])
    var = ((variances + (means - mean) ** 2) * weights).sum(axis=0)
    out = {
        "min": np.min(np.stack([np.asarray(s["min"], np.float64) for s in stats]), axis=0),
        "max": np.max(np.stack([np.asarray(s["max"], np.float64) for s in stats]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(total)], dtype=np.int64),
    }
    for key in QUANTILE_KEYS:
        if all(key in s for s in stats):
            out[key] = (np.stack([np.asarray(s[key], np.float64) for s in stats]) * weights).sum(axis=0)
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Nested lists, as in ``meta/stats.json``."""
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def stats_from_json(data: Mapping[str, Mapping[str, object]]) -> Stats:
    """Arrays from ``meta/stats.json``-style nested lists."""
    return {k: {s: np.asarray(v) for s, v in d.items()} for k, d in data.items()}
