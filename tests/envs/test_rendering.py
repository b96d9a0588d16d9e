"""Headless backend selection (EGL, then OSMesa, else a clear error) and the Triton preload."""

from __future__ import annotations

import os
import sys

import pytest

from fastvla.envs import rendering


@pytest.fixture
def fresh_process(monkeypatch):
    """Pretend MUJOCO_GL is unset and mujoco not yet imported (all restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    for key in saved:
        os.environ.pop(key, None)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)
    yield monkeypatch
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def _only(*available):
    return lambda names: any(n in available for n in names)


def test_prefers_egl(fresh_process):
    fresh_process.setattr(rendering, "_loadable", _only("libEGL.so.1", "libOSMesa.so.8"))
    assert rendering.select_backend() == "egl"
    assert os.environ["MUJOCO_GL"] == "egl"


def test_falls_back_to_osmesa(fresh_process):
    fresh_process.setattr(rendering, "_loadable", _only("libOSMesa.so.6"))
    assert rendering.select_backend() == "osmesa"


def test_no_backend_names_the_debian_packages(fresh_process):
    fresh_process.setattr(rendering, "_loadable", _only())
    with pytest.raises(RuntimeError, match=r"libegl1 libegl-mesa0 libgl1-mesa-dri.*libosmesa6"):
        rendering.select_backend()


def test_respects_user_choice(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.select_backend() == "osmesa"


def test_preload_triton_imports_it_when_installed():
    pytest.importorskip("triton")
    assert rendering.preload_triton() is True
    assert "triton" in sys.modules
