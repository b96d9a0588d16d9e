"""Training and validation data: checks against the dataset's features, episode split, DataLoaders.

Samples travel through the DataLoader as uint8 images (4x less to copy between processes than float)
and become float, normalised model inputs in the training process (the processor's job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fastvla.constants import ACTION, OBS_STATE, camera_of, depth_key
from fastvla.training.config import DataConfig
from fastvla.training.sampling import ResumableBatchSampler, split_episodes


@dataclass
class DataSpec:
    """What the dataset offers the model: cameras, dims, statistics, episodes per split."""

    root: Path
    camera_names: list[str]
    state_dim: int
    action_dim: int
    fps: int
    stats: dict[str, Any]
    train_episodes: list[int]
    val_episodes: list[int]
    obs_map: dict[str, Any] | None = None


def inspect_dataset(cfg: DataConfig, seed: int) -> DataSpec:
    """Read the dataset's metadata, check it has what ``cfg`` asks for and split the episodes.

    Raises:
        ValueError: a requested camera, ``observation.state`` or ``action`` is missing, or the dataset
            is empty.
    """
    from fastvla.datasets.lerobot_dataset import resolve_root
    from fastvla.datasets.metadata import DatasetMeta

    if not cfg.root:
        raise ValueError("no dataset given: pass --data.root PATH_OR_REPO_ID (a LeRobot dataset)")
    root = resolve_root(cfg.root)
    meta = DatasetMeta(root)
    available = [camera_of(k) for k in meta.camera_keys if k.startswith("observation.images.")]
    cameras = list(cfg.cameras) or available
    missing = [c for c in cameras if c not in available]
    if missing:
        raise ValueError(f"camera(s) {missing} not in dataset {root}; available: {available}")
    if not cameras:
        raise ValueError(f"dataset {root} has no camera features (observation.images.*); a VLA needs images")
    for key in (OBS_STATE, ACTION):
        if key not in meta.features:
            raise ValueError(
                f"dataset {root} lacks the feature {key!r} the model trains on; "
                f"it has {sorted(meta.features)}"
            )
    missing_depth = [c for c in cameras if cfg.depth and depth_key(c) not in meta.features]
    if missing_depth:
        raise ValueError(
            f"--data.depth: dataset {root} has no depth for camera(s) {missing_depth} (no "
            f"{[depth_key(c) for c in missing_depth]}); record with depth or drop --data.depth"
        )
    if meta.total_episodes == 0:
        raise ValueError(f"dataset {root} has no episodes")
    stats = {k: dict(v) for k, v in meta.stats.items()}
    if ACTION not in stats or OBS_STATE not in stats:  # no stats on disk: compute them from the frames
        from fastvla.datasets import LeRobotDataset

        stats = {k: dict(v) for k, v in LeRobotDataset(root).meta.stats.items()}
    train_eps, val_eps = split_episodes(
        [ep["episode_index"] for ep in meta.episodes], cfg.episodes, cfg.val_episodes, cfg.val_fraction, seed
    )
    return DataSpec(
        obs_map=_policy_obs_map(root, cameras),
        root=root,
        camera_names=cameras,
        state_dim=int(meta.features[OBS_STATE]["shape"][0]),
        action_dim=int(meta.features[ACTION]["shape"][0]),
        fps=meta.fps,
        stats=stats,
        train_episodes=train_eps,
        val_episodes=val_eps,
    )


def _policy_obs_map(root: Path, cameras: list[str]) -> dict[str, Any] | None:
    """The observation map the dataset was recorded with (any env), for the trained model's cameras:
    the exported policy then reads that env's keys (None: FastVLA env keys)."""
    from fastvla.datasets.recorder import recorded_obs_map

    obs_map = recorded_obs_map(root)
    if obs_map is None or not all(c in obs_map.get("cameras", {}) for c in cameras):
        return None
    depth = obs_map.get("depth") or {}
    return {
        **obs_map,
        "cameras": {c: obs_map["cameras"][c] for c in cameras},
        "depth": {c: depth[c] for c in cameras if c in depth},
    }


def build_dataset(
    spec: DataSpec,
    cfg: DataConfig,
    episodes: list[int],
    train: bool,
    cache_dir: Path,
    image_size: tuple[int, int],
    progress: bool = True,
) -> Dataset:
    """A :class:`fastvla.datasets.training.TrainingDataset` over ``episodes`` at ``image_size`` (H, W)."""
    from fastvla.datasets import LeRobotDataset
    from fastvla.datasets.augment import default_augment
    from fastvla.datasets.training import TrainingDataset

    return TrainingDataset(
        LeRobotDataset(spec.root, episodes=episodes),
        cameras=spec.camera_names,
        image_size=image_size,
        chunk_size=cfg.chunk_size,
        augment=default_augment() if (train and cfg.augment) else None,
        cache_dir=cache_dir,
        progress=progress,
        depth=cfg.depth,
    )


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
    "auto_num_workers",
    "build_dataset",
    "inspect_dataset",
    "make_loader",
    "train_sampler",
]
