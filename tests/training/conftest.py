"""Shared fixtures of the training tests: the recorded LeRobot dataset and a shared frame cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dataset_root(lerobot_fixtures: Path) -> Path:
    """3 episodes, 75 frames, cameras front + wrist at 64x64, state/action of 7 (written by lerobot)."""
    return lerobot_fixtures / "sim_2cam_video_v30"


@pytest.fixture(scope="session")
def frame_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-frame cache for every run of the session (decoding once is enough)."""
    return tmp_path_factory.mktemp("frame_cache")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeRobot dataset written here (no shared files): 3 episodes x 10 frames, cameras front + wrist at
    32x32, state/action of 4, two tasks; enough for the tiny preset to train a few updates."""
    import numpy as np

    from fastvla.datasets import LeRobotDatasetWriter

    root = tmp_path_factory.mktemp("tiny_dataset") / "data"
    names = [f"j{i}" for i in range(4)]
    features = {
        f"observation.images.{c}": {"dtype": "video", "shape": (32, 32, 3)} for c in ("front", "wrist")
    }
    features["observation.state"] = {"dtype": "float32", "shape": (4,), "names": names}
    features["action"] = {"dtype": "float32", "shape": (4,), "names": names}
    writer = LeRobotDatasetWriter(root, fps=10, features=features, robot_type="test")
    rng = np.random.default_rng(0)
    for episode in range(3):
        for t in range(10):
            state = (np.arange(4) * 0.1 + episode + 0.05 * t).astype(np.float32)
            frame = {
                f"observation.images.{c}": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                for c in ("front", "wrist")
            }
            writer.add_frame(
                {**frame, "observation.state": state, "action": -state}, task=f"task {episode % 2}"
            )
        writer.save_episode()
    writer.finalize()
    return root
