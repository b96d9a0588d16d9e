"""Deterministic stand-ins for tests, the loopback demo and the benchmark (no model, no torch).

``FrameEchoPolicy`` answers with numbers derived from its inputs, so a test can tell from a command which
image, state and instruction produced it: ``action = [frame_id, task_code, *state]`` where ``frame_id`` is
encoded in the front camera's first pixel by :func:`encode_frame_id`.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np


def encode_frame_id(rgb: np.ndarray, frame_id: int) -> np.ndarray:
    """Write ``frame_id`` (< 2**24) into pixel (0, 0) as little-endian R, G, B bytes (in place)."""
    rgb[0, 0] = [frame_id & 0xFF, (frame_id >> 8) & 0xFF, (frame_id >> 16) & 0xFF]
    return rgb


def decode_frame_id(rgb: np.ndarray) -> int:
    """Inverse of :func:`encode_frame_id`."""
    r, g, b = (int(v) for v in rgb[0, 0, :3])
    return r | (g << 8) | (b << 16)


def task_code(task: str | None) -> int:
    """A stable small number for an instruction (CRC32 mod 10007)."""
    return zlib.crc32((task or "").encode("utf-8")) % 10007


class FrameEchoPolicy:
    """A policy with FastVLAPolicy's interface whose actions echo their inputs.

    Args:
        camera: camera whose first pixel carries the frame id.
        chunk_size: rows returned by :meth:`predict_action_chunk`.
        compute_s: simulated inference time per call (seconds of sleep).
    """

    def __init__(self, camera: str = "front", chunk_size: int = 4, compute_s: float = 0.0) -> None:
        self.camera, self.chunk_size, self.compute_s = camera, chunk_size, compute_s
        self.resets = 0
        self.calls: list[tuple[int, str | None]] = []

    def reset(self) -> None:
        """Count resets (the bridge resets on instruction changes and after pauses)."""
        self.resets += 1

    def _action(self, obs: dict[str, Any], task: str | None) -> np.ndarray:
        if self.compute_s:
            import time

            time.sleep(self.compute_s)
        frame = decode_frame_id(obs["pixels"][self.camera])
        self.calls.append((frame, task))
        state = np.asarray(obs["agent_pos"], dtype=np.float64).reshape(-1)
        return np.concatenate([[float(frame), float(task_code(task))], state])

    def select_action(self, obs: dict[str, Any], task: str | None = None) -> np.ndarray:
        """``[frame_id, task_code(task), *state]``."""
        return self._action(obs, task)

    def predict_action_chunk(self, obs: dict[str, Any], task: str | None = None) -> np.ndarray:
        """``(chunk_size, A)``: the action of :meth:`select_action` plus ``0.001 * row`` on every entry."""
        action = self._action(obs, task)
        return action[None, :] + 0.001 * np.arange(self.chunk_size)[:, None]  # (T, A)
