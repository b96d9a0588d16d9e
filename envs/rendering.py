"""Headless MuJoCo rendering: GL backend selection, the Triton preload, and a lazy multi-camera renderer.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so :func:`select_backend` must run
before that import (every FastVLA env module calls it at import time). When ``MUJOCO_GL`` is unset we
pick EGL, then OSMesa, and otherwise fail with the Debian packages to install.

Two process-level pitfalls are handled here (see the shared ENVIRONMENT notes):

* Mesa's llvmpipe and Triton each carry their own LLVM; importing ``triton`` *after* a GL context exists
  segfaults. :func:`~fastvla.utils.preload.preload_triton` (re-exported here) imports it first and
  :class:`CameraRenderer` calls it before creating its first context.
* GL contexts don't survive ``fork``. Renderers are created lazily, in the process that renders, so
  ``AsyncVectorEnv`` works with the ``forkserver``/``spawn`` start methods.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import warnings
import weakref
from collections.abc import Sequence

import numpy as np

from fastvla.utils.preload import preload_triton

# Debian packages that provide each backend's shared libraries.
_BACKEND_LIBS = {
    "egl": (("libEGL.so.1", "libEGL.so"), "libegl1 libegl-mesa0 libgl1-mesa-dri"),
    "osmesa": (("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"), "libosmesa6"),
}
INSTALL_HINT = (
    "headless MuJoCo rendering needs EGL or OSMesa: `sudo apt-get install -y libegl1 libegl-mesa0 "
    "libgl1-mesa-dri` (EGL) or `sudo apt-get install -y libosmesa6` (OSMesa), then set MUJOCO_GL=egl "
    "or MUJOCO_GL=osmesa"
)


def _loadable(names: Sequence[str]) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def select_backend() -> str:
    """Choose the MuJoCo GL backend and export it as ``MUJOCO_GL`` (before ``mujoco`` is imported).

    Returns:
        The backend name: the user's ``MUJOCO_GL`` if set, else ``"egl"`` or ``"osmesa"``, whichever
        has its libraries installed.

    Raises:
        RuntimeError: neither EGL nor OSMesa is installed; the message names the Debian packages.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if "mujoco" in sys.modules:
        warnings.warn(
            "mujoco was imported before fastvla.envs with MUJOCO_GL unset, so it may use a windowed GL "
            "backend; set MUJOCO_GL=egl (or osmesa) before importing mujoco for headless rendering",
            RuntimeWarning,
            stacklevel=2,
        )
        return ""
    for backend, (libs, _) in _BACKEND_LIBS.items():
        if _loadable(libs):
            os.environ["MUJOCO_GL"] = backend
            # PyOpenGL reads its own variable; keep the two consistent.
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise RuntimeError(f"no headless OpenGL backend found. {INSTALL_HINT}")


# Open renderers, closed at interpreter exit while GL is still usable (avoids EGL errors in __del__).
_LIVE: weakref.WeakSet[CameraRenderer] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_all() -> None:
    for renderer in list(_LIVE):
        with contextlib.suppress(Exception):
            renderer.close()


class CameraRenderer:
    """Renders RGB (and optionally depth) images from named cameras of one MuJoCo model.

    The GL context is created on the first :meth:`render` call, in the calling process.

    Args:
        model: The ``mujoco.MjModel`` to render.
        height: Image height in pixels.
        width: Image width in pixels.
        shadows: Render shadows (about 2x slower on software GL).
        reflections: Render reflections (slower on software GL).
    """

    def __init__(self, model, height: int, width: int, shadows: bool = False, reflections: bool = False):
        self.model = model
        self.height = int(height)
        self.width = int(width)
        self.shadows = shadows
        self.reflections = reflections
        self._renderer = None
        self._pid: int | None = None

    def _ensure(self):
        import mujoco

        if self._renderer is not None and self._pid == os.getpid():
            return self._renderer
        # A renderer inherited through fork is unusable; drop it without touching its context.
        self._renderer = None
        preload_triton()
        # The offscreen buffer must hold the requested size.
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, self.width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, self.height)
        try:
            renderer = mujoco.Renderer(self.model, self.height, self.width)
        except Exception as exc:
            raise RuntimeError(
                f"could not create a MuJoCo renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {exc}. "
                f"{INSTALL_HINT}"
            ) from exc
        self._renderer = renderer
        self._pid = os.getpid()
        _LIVE.add(self)
        global _ATEXIT_REGISTERED
        if not _ATEXIT_REGISTERED:
            # Registered after MuJoCo's own GL teardown hook, so it runs before it (atexit is LIFO).
            atexit.register(_close_all)
            _ATEXIT_REGISTERED = True
        return renderer

    def _update(self, renderer, data, camera: str) -> None:
        import mujoco

        renderer.update_scene(data, camera=camera)
        flags = renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.shadows
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.reflections
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False

    def render(
        self, data, cameras: Sequence[str], depth: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Render every camera.

        Args:
            data: The ``mujoco.MjData`` whose state is drawn.
            cameras: Camera names.
            depth: Also render depth images.

        Returns:
            ``(rgb, depth)``: dicts camera -> uint8 ``(H, W, 3)`` and camera -> float32 ``(H, W)`` metres
            along the optical axis (empty when ``depth`` is False).
        """
        renderer = self._ensure()
        rgb: dict[str, np.ndarray] = {}
        dep: dict[str, np.ndarray] = {}
        for cam in cameras:
            self._update(renderer, data, cam)
            rgb[cam] = renderer.render().copy()
        if depth:
            renderer.enable_depth_rendering()
            try:
                for cam in cameras:
                    self._update(renderer, data, cam)
                    dep[cam] = renderer.render().astype(np.float32, copy=True)
            finally:
                renderer.disable_depth_rendering()
        return rgb, dep

    def close(self) -> None:
        """Free the GL context (only in the process that created it)."""
        if self._renderer is not None and self._pid == os.getpid():
            self._renderer.close()
        self._renderer = None
        self._pid = None

    def __del__(self) -> None:
        if sys.is_finalizing():
            return
        with contextlib.suppress(Exception):
            self.close()
