"""Chunk execution: a receding-horizon action queue and ACT's temporal ensembling."""

from __future__ import annotations

import numpy as np


class ActionQueue:
    """Executes the first ``n_action_steps`` actions of each predicted chunk, then re-plans."""

    def __init__(self, n_action_steps: int):
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1; got {n_action_steps}")
        self.n_action_steps = n_action_steps
        self._queue: np.ndarray | None = None  # (B, n, A)

    def reset(self) -> None:
        """Drop the queued actions."""
        self._queue = None

    def empty(self) -> bool:
        """Whether a new chunk is needed."""
        return self._queue is None or self._queue.shape[1] == 0

    def push(self, chunk: np.ndarray) -> None:
        """Queue the first ``n_action_steps`` steps of ``chunk`` (B, T, A)."""
        self._queue = chunk[:, : self.n_action_steps].copy()

    def pop(self) -> np.ndarray:
        """Next action (B, A)."""
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action


class TemporalEnsembler:
    """ACT's temporal ensembling: every step a new chunk is predicted and the actions that all chunks so far
    predicted for the current step are averaged with weights ``exp(-coeff * i)``, ``i = 0`` the oldest.

    A positive ``coeff`` favours older predictions (smoother), as in the ACT paper (0.01).
    """

    def __init__(self, coeff: float, chunk_size: int):
        self.coeff = coeff
        self.weights = np.exp(-coeff * np.arange(chunk_size))  # (T,)
        self.cum_weights = np.cumsum(self.weights)
        self.reset()

    def reset(self) -> None:
        """Forget all previous predictions."""
        self._actions: np.ndarray | None = None  # (B, T-1, A) running weighted means for future steps
        self._counts: np.ndarray | None = None  # (T-1,) predictions averaged into each step

    def update(self, chunk: np.ndarray) -> np.ndarray:
        """Add a new chunk (B, T, A) predicted at the current step; return the action (B, A) to execute."""
        chunk = chunk.astype(np.float64)
        if self._actions is None:
            actions, counts = chunk, np.ones(chunk.shape[1], dtype=np.int64)
        else:
            counts = self._counts
            prev_sum = self._actions * self.cum_weights[counts - 1][None, :, None]  # (B, T-1, A)
            new = chunk[:, :-1] * self.weights[counts][None, :, None]
            actions = (prev_sum + new) / self.cum_weights[counts][None, :, None]
            counts = np.minimum(counts + 1, len(self.weights) - 1)
            actions = np.concatenate([actions, chunk[:, -1:]], axis=1)  # (B, T, A)
            counts = np.concatenate([counts, [1]])
        self._actions, self._counts = actions[:, 1:], counts[1:]
        return actions[:, 0].astype(np.float32)
