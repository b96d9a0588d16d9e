"""Micro-batching helpers: decide whether requests may be merged, stack them, and split the result.

A request's observation is either a single Gymnasium observation or a batch from a vector env (leading
batch dimension). The server merges requests only when it is sure which: images (uint8 leaves with at
least 3 dimensions, ``(H, W, C)``) have rank 4 in a batch; without images, a list ``task`` or the client's
``batched`` flag decides. Requests it cannot classify run alone, exactly as sent.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Leaves = dict[str, np.ndarray]
"""An observation flattened to ``{"pixels/front": array, ...}``."""


def flatten(obs: Mapping[str, Any], prefix: str = "") -> Leaves | None:
    """Flatten a nested observation map to ``{path: array}``; None if a leaf is not numeric."""
    out: Leaves = {}
    for key, value in obs.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            sub = flatten(value, prefix=f"{path}/")
            if sub is None:
                return None
            out.update(sub)
        elif isinstance(value, np.ndarray):
            out[path] = value
        elif isinstance(value, (bool, numbers.Number)):
            out[path] = np.asarray(value)
        else:
            return None
    return out


def unflatten(leaves: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for path, value in leaves.items():
        node = out
        *parents, last = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def infer_batch_size(leaves: Leaves, task: Any, batched: bool | None) -> int | None:
    """Number of samples in a request: 0 for a single observation, B for a batch, None if unknown."""
    if batched is None:
        image_ranks = {v.ndim for v in leaves.values() if v.dtype == np.uint8 and v.ndim >= 3}
        if image_ranks == {3}:
            batched = False
        elif image_ranks == {4} or (not image_ranks and isinstance(task, list)):
            batched = True
        else:
            return None
    if not batched:
        return 0
    sizes = {v.shape[0] if v.ndim else -1 for v in leaves.values()}
    if len(sizes) != 1 or -1 in sizes:
        return None
    (size,) = sizes
    return size if size > 0 else None


@dataclass
class InferRequest:
    """One ``infer`` request waiting for the policy.

    Attributes:
        obs: The observation as received.
        task: ``None``, a string, or one string per sample.
        batch_size: 0 for a single observation, B for a batch, None when the request must run alone.
        leaves: The flattened observation (None when it could not be flattened).
        future: Resolved with the actions (or an exception) by the server.
        received: ``time.perf_counter()`` when the message arrived.
    """

    obs: dict[str, Any]
    task: str | list[str] | None
    batch_size: int | None
    leaves: Leaves | None
    future: Any
    received: float
    dequeued: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Samples this request adds to a batch (a single observation counts 1)."""
        return max(self.batch_size or 0, 1)

    def merge_key(self) -> tuple | None:
        """Requests with equal keys can be stacked into one policy call; None: run alone."""
        if self.batch_size is None or self.leaves is None:
            return None
        if isinstance(self.task, list) and len(self.task) != self.n_samples:
            return None
        sample_spec = tuple(
            sorted(
                (path, v.dtype.str, v.shape[1:] if self.batch_size else v.shape)
                for path, v in self.leaves.items()
            )
        )
        return (sample_spec, self.task is None)

    def task_list(self) -> list[str] | None:
        """The task as one string per sample (None when the policy default applies)."""
        if self.task is None:
            return None
        if isinstance(self.task, str):
            return [self.task] * self.n_samples
        return list(self.task)


def merge(requests: Sequence[InferRequest]) -> tuple[dict[str, Any], list[str] | None]:
    """Stack mergeable requests (same :meth:`InferRequest.merge_key`) into one batched observation."""
    paths = requests[0].leaves.keys()
    merged = {}
    for path in paths:
        parts = [r.leaves[path] if r.batch_size else r.leaves[path][None] for r in requests]
        merged[path] = np.concatenate(parts, axis=0)  # (sum of n_samples, *sample shape)
    if requests[0].task is None:
        tasks = None
    else:
        tasks = [t for r in requests for t in r.task_list()]
    return unflatten(merged), tasks


def split(actions: np.ndarray, requests: Sequence[InferRequest]) -> list[np.ndarray]:
    """Cut the batched policy output back into one array per request (single requests lose the axis)."""
    total = sum(r.n_samples for r in requests)
    if actions.ndim < 1 or actions.shape[0] != total:
        raise ValueError(
            f"policy returned actions of shape {actions.shape} for a batch of {total} observations; "
            f"predict_action_chunk must return (B, chunk, action_dim) for a batch"
        )
    out, start = [], 0
    for r in requests:
        part = actions[start : start + r.n_samples]
        out.append(part if r.batch_size else part[0])
        start += r.n_samples
    return out
