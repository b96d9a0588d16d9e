"""FastVLA: fine-tune vision-language-action policies on modest GPUs and evaluate them in simulation.

Sub-packages: ``fastvla.envs`` (MuJoCo tabletop tasks), ``fastvla.datasets`` (LeRobot format),
``fastvla.policies`` (``FastVLAPolicy``), ``fastvla.eval`` (closed-loop evaluation). The model,
quantisation, kernels, training and the CLI live in this core package. Importing ``fastvla`` has no
side effects and does not import torch; heavy names are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FastVLAConfig": "fastvla.model",
    "FastVLAModel": "fastvla.model",
    "FastVLAProcessor": "fastvla.model",
    "FastVLAPolicy": "fastvla.policies",
    "train": "fastvla.training",
    "TrainConfig": "fastvla.training",
    "evaluate": "fastvla.eval",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastvla' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
