"""Shared pytest setup: headless rendering and the path to the LeRobot fixtures in ``tests/fixtures``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def lerobot_fixtures() -> Path:
    """Folder of datasets written by the ``lerobot`` package itself (read-only; see fixtures/README.md)."""
    path = FIXTURES / "lerobot"
    assert path.is_dir(), f"LeRobot fixtures missing at {path}; they are part of the repository"
    return path
