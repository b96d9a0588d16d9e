"""Feature normalisation with LeRobot-style dataset statistics.

Statistics are a dict ``{feature_key: {"mean", "std", "min", "max", "q01", "q99", ...}}`` of per-channel
arrays, as stored in a LeRobot v3.0 ``meta/stats.json``. A :class:`Normalizer` maps features to a
well-conditioned range for training and back again for acting:

* ``mean_std``:  ``(x - mean) / (std + eps)``
* ``min_max``:   ``2 (x - min) / (max - min + eps) - 1``  (range -> [-1, 1])
* ``quantile``:  ``2 (x - q01) / (q99 - q01 + eps) - 1``  (1st-99th percentile -> [-1, 1], robust to outliers)
* ``identity``:  unchanged

Works on numpy arrays and torch tensors alike (broadcast over leading dimensions).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

EPS = 1e-8


class NormalizationMode(str, enum.Enum):
    """How a feature is scaled before it reaches the model."""

    IDENTITY = "identity"
    MEAN_STD = "mean_std"
    MIN_MAX = "min_max"
    QUANTILE = "quantile"


_REQUIRED = {
    NormalizationMode.IDENTITY: (),
    NormalizationMode.MEAN_STD: ("mean", "std"),
    NormalizationMode.MIN_MAX: ("min", "max"),
    NormalizationMode.QUANTILE: ("q01", "q99"),
}


def _offset_scale(stats: Mapping[str, Any], mode: NormalizationMode) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` such that ``normalized = (x - offset) / scale``."""
    if mode is NormalizationMode.MEAN_STD:
        return np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64) + EPS
    lo_key, hi_key = ("min", "max") if mode is NormalizationMode.MIN_MAX else ("q01", "q99")
    lo, hi = np.asarray(stats[lo_key], np.float64), np.asarray(stats[hi_key], np.float64)
    return (lo + hi) / 2.0, np.maximum((hi - lo) / 2.0, EPS)


class Normalizer:
    """Normalises and un-normalises features with fixed statistics.

    Args:
        stats: per-feature statistics, e.g. ``{"action": {"mean": [...], "std": [...]}}``.
        modes: normalisation mode per feature key; keys not listed are left unchanged.

    Example:
        >>> norm = Normalizer({"action": {"min": [0.0], "max": [2.0]}}, {"action": "min_max"})
        >>> norm.normalize("action", np.array([2.0]))
        array([1.])
    """

    def __init__(self, stats: Mapping[str, Mapping[str, Any]], modes: Mapping[str, str | NormalizationMode]):
        self.stats = {
            key: {name: np.asarray(value, np.float64).tolist() for name, value in d.items()}
            for key, d in stats.items()
        }
        self.modes = {k: NormalizationMode(m) for k, m in modes.items()}
        self._params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key, mode in self.modes.items():
            if mode is NormalizationMode.IDENTITY:
                continue
            if key not in stats:
                raise KeyError(f"no statistics for feature {key!r}; available: {sorted(stats)}")
            missing = [s for s in _REQUIRED[mode] if s not in stats[key]]
            if missing:
                raise KeyError(
                    f"normalisation mode {mode.value!r} for {key!r} needs statistics {missing}; "
                    f"the stats have {sorted(stats[key])}. Pick another mode or recompute the stats."
                )
            self._params[key] = _offset_scale(stats[key], mode)

    def _apply(self, key: str, x: Any, inverse: bool) -> Any:
        if key not in self._params:
            return x
        offset, scale = self._params[key]
        if offset.shape and x.shape[-1] != offset.shape[-1]:
            raise ValueError(
                f"feature {key!r} has {x.shape[-1]} channels but its statistics have {offset.shape[-1]}; "
                "the data does not match the dataset the statistics came from"
            )
        if isinstance(x, np.ndarray):
            off, sc = offset.astype(x.dtype, copy=False), scale.astype(x.dtype, copy=False)
        else:  # torch tensor
            import torch

            off = torch.as_tensor(offset, dtype=x.dtype, device=x.device)
            sc = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
        return x * sc + off if inverse else (x - off) / sc

    def normalize(self, key: str, x: Any) -> Any:
        """Scale feature ``key`` into the model's range (no-op for keys without a mode)."""
        return self._apply(key, x, inverse=False)

    def unnormalize(self, key: str, x: Any) -> Any:
        """Map model outputs for feature ``key`` back to the data's units."""
        return self._apply(key, x, inverse=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {"modes": {k: m.value for k, m in self.modes.items()}, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """Rebuild a normalizer saved with :meth:`to_dict`."""
        return cls(data["stats"], data["modes"])

    def save(self, path: str) -> None:
        """Write the normalizer as JSON, atomically."""
        from fastvla.utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str) -> Normalizer:
        """Read a normalizer written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))
