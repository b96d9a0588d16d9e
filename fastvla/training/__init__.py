"""Fine-tuning FastVLA models on LeRobot datasets: ``fastvla.train(TrainConfig(...))`` and ``fastvla train``.

Importing this package is light (the configs are plain dataclasses); torch, accelerate and the model
are imported when :func:`train` runs.

Example:
    >>> from fastvla.training import DataConfig, TrainConfig
    >>> cfg = TrainConfig(data=DataConfig(root="data/pick"), steps=2000, batch_size=16)
    >>> cfg.optim.scheduler
    'cosine'
"""

from __future__ import annotations

from typing import Any

from fastvla.training.config import (
    DataConfig,
    MemoryConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "MemoryConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "TrainConfig",
    "Trainer",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "Trainer"):
        # deferred: start-up time (lazy attribute: `import fastvla.training` stays light)
        from fastvla.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'fastvla.training' has no attribute {name!r}")
