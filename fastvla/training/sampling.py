"""Deterministic, resumable data order for single- and multi-process training.

Epoch ``e`` visits the samples in a permutation drawn from a generator seeded with ``(seed, e)``; the
permutation is cut into *global* batches of ``batch_size * num_replicas`` samples and rank ``r`` takes
the ``r``-th slice of each. The position in the stream is ``(epoch, batches consumed)``, two integers
saved with every checkpoint, so a resumed run reads exactly the samples an uninterrupted run would have
read next — whatever the number of DataLoader workers, and without touching the global RNGs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields this rank's batches of one epoch, starting at a given batch.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch per process.
        seed: base seed of the per-epoch permutations.
        num_replicas: number of data-parallel processes.
        rank: this process's rank.
        shuffle: permute each epoch (else sequential order).

    The last incomplete global batch of an epoch is dropped so every rank sees batches of the same
    size (DDP needs the same number of steps everywhere).

    Example:
        >>> s = ResumableBatchSampler(10, batch_size=2, seed=0)
        >>> s.set_position(epoch=0, batch=3)
        >>> len(list(s))
        2
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} processes")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.global_batch = batch_size * num_replicas
        self.seed = seed
        self.rank = rank
        self.shuffle = shuffle
        self.batches_per_epoch = num_samples // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training set has {num_samples} samples, fewer than one global batch of "
                f"{self.global_batch} (batch_size {batch_size} x {num_replicas} processes); "
                "lower --batch-size or use more episodes"
            )
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, batch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` from batch ``batch`` on."""
        if not 0 <= batch <= self.batches_per_epoch:
            raise ValueError(f"batch {batch} out of range: an epoch has {self.batches_per_epoch} batches")
        self.epoch, self.start = epoch, batch

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(int(np.uint32(self.seed)) * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.order(self.epoch)
        lo = self.rank * self.batch_size
        for b in range(self.start, self.batches_per_epoch):
            base = b * self.global_batch
            yield perm[base + lo : base + lo + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def split_episodes(
    available: Sequence[int],
    episodes: Sequence[int] = (),
    val_episodes: Sequence[int] = (),
    val_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """Split episode indices into (train, validation), disjoint and sorted.

    Args:
        available: episode indices present in the dataset.
        episodes: restrict training to these (empty = all not held out).
        val_episodes: held-out episodes; if empty, ``val_fraction`` of the candidates are drawn at
            random with ``seed`` (at least one when the fraction is > 0 and two or more episodes exist).
        val_fraction: share of episodes held out when ``val_episodes`` is empty.
        seed: seed of the random hold-out.

    Raises:
        ValueError: an episode that is not in the dataset, or nothing left to train on.
    """
    have = sorted(int(e) for e in available)
    missing = sorted(set(episodes) - set(have)) + sorted(set(val_episodes) - set(have))
    if missing:
        shown = have if len(have) <= 20 else f"{have[:10]} ... {have[-5:]}"
        raise ValueError(f"episode(s) {missing} not in the dataset; it has episodes {shown}")
    if val_episodes:
        val = sorted(set(val_episodes))
    else:
        pool = sorted(set(episodes) if episodes else set(have))
        n_val = round(val_fraction * len(pool))
        if val_fraction > 0 and len(pool) >= 2:
            n_val = max(1, n_val)
        rng = np.random.default_rng(seed)
        val = sorted(int(e) for e in rng.choice(pool, size=n_val, replace=False)) if n_val else []
    train = sorted((set(episodes) if episodes else set(have)) - set(val))
    if not train:
        raise ValueError(
            f"no training episodes left after holding out {val} for validation; lower --data.val-fraction "
            "or pass --data.val-episodes explicitly"
        )
    return train, val
