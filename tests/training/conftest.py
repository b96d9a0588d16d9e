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
