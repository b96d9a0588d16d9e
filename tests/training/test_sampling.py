"""The resumable, DDP-aware data order and the episode split."""

from __future__ import annotations

import pytest

from fastvla.training.sampling import ResumableBatchSampler, split_episodes


def _epoch(sampler: ResumableBatchSampler, epoch: int, start: int = 0) -> list[list[int]]:
    sampler.set_position(epoch, start)
    return list(sampler)


def test_resuming_mid_epoch_continues_the_same_stream() -> None:
    sampler = ResumableBatchSampler(50, batch_size=4, seed=3)
    full = _epoch(sampler, 0) + _epoch(sampler, 1)
    resumed = _epoch(ResumableBatchSampler(50, batch_size=4, seed=3), 0, start=5)
    assert resumed == full[5:12]
    assert _epoch(ResumableBatchSampler(50, 4, seed=3), 1, start=2) == full[14:]


def test_epochs_differ_and_cover_without_repeats() -> None:
    sampler = ResumableBatchSampler(20, batch_size=5, seed=0)
    e0, e1 = _epoch(sampler, 0), _epoch(sampler, 1)
    assert sorted(i for b in e0 for i in b) == list(range(20))
    assert e0 != e1
    assert _epoch(ResumableBatchSampler(20, 5, seed=1), 0) != e0


def test_ranks_split_each_global_batch() -> None:
    n, bs = 23, 3
    single = _epoch(ResumableBatchSampler(n, batch_size=2 * bs, seed=7), 0)
    r0 = _epoch(ResumableBatchSampler(n, bs, seed=7, num_replicas=2, rank=0), 0)
    r1 = _epoch(ResumableBatchSampler(n, bs, seed=7, num_replicas=2, rank=1), 0)
    assert len(r0) == len(r1) == 23 // 6  # the incomplete global batch is dropped on every rank
    for whole, a, b in zip(single, r0, r1):
        assert whole == a + b


def test_too_few_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        ResumableBatchSampler(7, batch_size=4, num_replicas=2)


def test_split_episodes() -> None:
    train, val = split_episodes(range(10), val_fraction=0.2, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split_episodes(range(10), val_fraction=0.2, seed=0) == (train, val)  # seeded
    assert split_episodes(range(3), val_fraction=0.05)[1] != []  # at least one held out
    assert split_episodes(range(5), episodes=[0, 1, 2], val_episodes=[4]) == ([0, 1, 2], [4])
    assert split_episodes(range(5), val_fraction=0.0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(ValueError, match=r"episode\(s\) \[9\] not in the dataset"):
        split_episodes(range(5), val_episodes=[9])
    with pytest.raises(ValueError, match="no training episodes left"):
        split_episodes(range(2), episodes=[1], val_episodes=[1])
