"""Shared pytest setup: headless rendering and paths to the shared LeRobot fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTVLA_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def lerobot_fixtures() -> Path:
    """Folder of datasets written by the ``lerobot`` package itself (read-only)."""
    path = SHARED / "fixtures" / "lerobot"
    if not path.is_dir():
        pytest.skip(f"shared LeRobot fixtures not found at {path} (set FASTVLA_SHARED)")
    return path
