"""Training and validation data: what the Trainer needs from a dataset (:class:`TrainingData`), DataLoaders.

Samples travel through the DataLoader as uint8 images (4x less to copy between processes than float)
and become float, normalised model inputs in the training process (the processor's job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from fastvla.training.config import DataConfig
from fastvla.training.sampling import ResumableBatchSampler


@dataclass
class DataSpec:
    """What the dataset offers the model: cameras, dims, statistics, episodes per split."""

    root: Path
    cameras: list[str]
    state_dim: int
    action_dim: int
    fps: int
    stats: dict[str, Any]
    train_episodes: list[int]
    val_episodes: list[int]
    obs_map: dict[str, Any] | None = None


class TrainingData(Protocol):
    """Where the Trainer's samples come from: injected as ``Trainer(config, data=...)``.

    The training core reads no dataset format itself. :class:`fastvla.datasets.training.LeRobotTrainingData`
    (LeRobot v3.0/v2.1 through :mod:`fastvla.datasets`) is the default; any object with these two methods
    works, e.g. synthetic data in a benchmark or another on-disk format.
    """

    def inspect(self, cfg: DataConfig, seed: int) -> DataSpec:
        """Read the dataset's metadata, check it offers what ``cfg`` asks for, split its episodes.

        Raises:
            ValueError: a requested camera, ``observation.state`` or ``action`` is missing, or the
                dataset is empty.
        """
        ...

    def build(
        self,
        spec: DataSpec,
        cfg: DataConfig,
        episodes: list[int],
        train: bool,
        cache_dir: Path,
        image_size: tuple[int, int],
        progress: bool = True,
        aux_goal: bool = False,
    ) -> Dataset:
        """A map-style dataset of training samples over ``episodes`` at ``image_size`` (H, W).

        ``train`` selects augmentation (``cfg.augment``); samples are dicts of uint8 images (one per
        camera of ``spec``), ``observation.state``, the action chunk and its padding mask, and the task;
        with ``aux_goal``, also ``aux_goal`` float32 (S,): the state at the episode's last frame minus the
        state at this frame, raw units. The Trainer passes ``aux_goal`` only when it is True
        (``--model.aux-goal-weight`` above 0), so implementations without the argument work otherwise.
        """
        ...


def default_training_data() -> TrainingData:
    """The data a Trainer reads when none is injected: LeRobot datasets through :mod:`fastvla.datasets`.

    The one place the training core names a side package (allow-listed in tests/test_layout.py): it keeps
    ``train(config)`` a one-liner for the Python API, ``fastvla train`` and the benchmarks. Pass
    ``data=`` to read anything else.
    """
    # Deferred: fastvla.datasets.training imports this module, and it pulls in PyAV and pyarrow.
    # deferred: the core's one default side-folder import (allow-listed in tests/test_layout.py)
    from fastvla.datasets.training import LeRobotTrainingData

    return LeRobotTrainingData()


def auto_num_workers(requested: int, processes_per_node: int = 1) -> int:
    """Resolve ``num_workers=-1``: none with <= 2 cores per process, else half of them, at most 8.

    Samples come from the memory-mapped frame cache (~16 us each, ~1 ms per batch of 32 at 64x64), so
    on a 2-core machine a worker process would only compete with the training threads for the cores.
    """
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cores // max(1, processes_per_node))
    return 0 if per_process <= 2 else min(8, per_process // 2)


def make_loader(
    dataset: Dataset,
    batch_sampler: Any,
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader over ``batch_sampler`` that never draws from the global torch RNG."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        # An explicit generator: worker seeds would otherwise be drawn from (and advance) the global
        # RNG, and a resumed run would then see a different dropout stream than an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )


class ShardedEvalSampler:
    """Sequential, non-dropping batches of this rank's share (``rank::world``) of a dataset."""

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, num_samples, num_replicas))
        self.batch_size = batch_size

    def __iter__(self):
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i : i + self.batch_size]

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size


def train_sampler(
    num_samples: int, batch_size: int, seed: int, world: int, rank: int
) -> ResumableBatchSampler:
    """The resumable training sampler (see :mod:`fastvla.training.sampling`)."""
    return ResumableBatchSampler(num_samples, batch_size, seed=seed, num_replicas=world, rank=rank)


__all__ = [
    "DataSpec",
    "ShardedEvalSampler",
    "TrainingData",
    "auto_num_workers",
    "default_training_data",
    "make_loader",
    "train_sampler",
]
