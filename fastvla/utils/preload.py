"""Import Triton before any GL context exists: Mesa's llvmpipe and Triton's native library each bundle LLVM.

A process that creates a MuJoCo renderer (EGL or OSMesa on llvmpipe) and *then* imports ``triton`` dies
with a segmentation fault, and PyTorch imports Triton lazily (``torch._dynamo`` on the first
``AdamW.step()``, ``torch.compile``). Any process that renders and also trains or evaluates a model calls
:func:`preload_triton` first: the renderer (:mod:`fastvla.envs.rendering`) does, and so does the Trainer
when it is given an eval hook. It lives in the core so that both can reach it without the training core
importing the envs.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings


def preload_triton() -> bool:
    """Import ``triton`` (if installed) before any GL context exists in this process.

    Returns:
        True if Triton is installed and now imported.
    """
    if "triton" in sys.modules:
        return True
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401  (optional dependency: the import is the point)
    except Exception as exc:  # a broken Triton install must not break rendering
        warnings.warn(
            f"could not preload triton ({exc!r}); rendering continues", RuntimeWarning, stacklevel=2
        )
        return False
    return True
