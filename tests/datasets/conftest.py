"""Helpers for the dataset tests: a synthetic episode generator and a small-dataset factory."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastvla.datasets import LeRobotDatasetWriter

FPS = 10


def frame_image(episode: int, step: int, size: int = 32, channel_shift: int = 0) -> np.ndarray:
    """A deterministic picture: flat colour depending on (episode, step) plus a bright square that moves."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = ((40 * episode + 6 * step + channel_shift) % 200 + 20, 90, (17 * step) % 200 + 30)
    x = (2 * step) % (size - 8)
    img[8:16, x : x + 8] = 230
    return img


def frame_values(episode: int, step: int) -> dict[str, np.ndarray]:
    """State and action of a frame, distinct per (episode, step)."""
    state = np.arange(4, dtype=np.float32) * 0.1 + episode + 0.01 * step
    return {"observation.state": state, "action": -state}


def features(cameras: Sequence[str] = ("front", "wrist"), size: int = 32, dtype: str = "video") -> dict:
    feats = {f"observation.images.{c}": {"dtype": dtype, "shape": (size, size, 3)} for c in cameras}
    feats["observation.state"] = {"dtype": "float32", "shape": (4,), "names": [f"j{i}" for i in range(4)]}
    feats["action"] = {"dtype": "float32", "shape": (4,), "names": [f"j{i}" for i in range(4)]}
    return feats


def write_episodes(
    writer: LeRobotDatasetWriter,
    lengths: Sequence[int],
    first_episode: int = 0,
    cameras: Sequence[str] = ("front", "wrist"),
    size: int = 32,
) -> None:
    for e, length in enumerate(lengths, start=first_episode):
        for t in range(length):
            frame = {
                f"observation.images.{c}": frame_image(e, t, size, 50 * i) for i, c in enumerate(cameras)
            }
            frame.update(frame_values(e, t))
            writer.add_frame(frame, task=f"task {e % 2}")
        writer.save_episode()


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_dataset(lengths=(12, 9, 15), codec="h264", dtype="video", **writer_kwargs)``."""
    counter = iter(range(1000))

    def make(
        lengths: Sequence[int] = (12, 9, 15),
        codec: str = "h264",
        dtype: str = "video",
        cameras: Sequence[str] = ("front", "wrist"),
        size: int = 32,
        **kwargs,
    ) -> Path:
        root = tmp_path / f"ds{next(counter)}"
        writer = LeRobotDatasetWriter(
            root, fps=FPS, features=features(cameras, size, dtype), codec=codec, robot_type="test", **kwargs
        )
        write_episodes(writer, lengths, cameras=cameras, size=size)
        writer.finalize()
        return root

    return make


def load_expected(fixtures: Path, name: str) -> dict:
    return json.loads((fixtures / f"{name}.expected.json").read_text())


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The module's helper functions (test modules can't import conftest under importlib mode)."""
    return SimpleNamespace(
        frame_image=frame_image,
        frame_values=frame_values,
        features=features,
        write_episodes=write_episodes,
        load_expected=load_expected,
        fps=FPS,
    )
