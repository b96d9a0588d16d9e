"""TrainingDataset: cached frames equal decoded frames, later epochs never decode, chunks and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvla.datasets import LeRobotDataset, TrainingDataset
from fastvla.datasets import training as training_module
from fastvla.datasets.augment import ColorJitter, RandomCrop, RandomShift, default_augment


def test_samples_match_reader(make_dataset, tmp_path):
    root = make_dataset((12, 9, 15))
    ds = LeRobotDataset(root, delta_timestamps={"action": [i / 10 for i in range(5)]})
    td = TrainingDataset(ds, ["front", "wrist"], 32, 5, cache_dir=tmp_path / "cache", progress=False)
    assert len(td) == len(ds) == 36
    for idx in range(len(ds)):
        ref, sample = ds[idx], td[idx]
        assert set(sample) == {
            "observation.images.front",
            "observation.images.wrist",
            "observation.state",
            "action",
            "action_is_pad",
            "task",
        }
        for key in ("observation.images.front", "observation.images.wrist"):
            assert sample[key].dtype == torch.uint8 and sample[key].shape == (3, 32, 32)
            assert torch.equal(sample[key], (ref[key] * 255).round().to(torch.uint8))
        assert torch.equal(sample["observation.state"], ref["observation.state"])
        assert torch.equal(sample["action"], ref["action"])  # same window, same clamping
        assert torch.equal(sample["action_is_pad"], ref["action_is_pad"])
        assert sample["task"] == ref["task"]
    assert td[11]["action_is_pad"].tolist() == [False, True, True, True, True]  # last frame of episode 0


def test_parallel_cache_build_matches_serial(make_dataset, tmp_path, monkeypatch):
    """Segments decoded by worker processes fill the same cache as one sequential pass."""
    root = make_dataset((12, 9, 15, 11))
    serial = TrainingDataset(root, None, 32, 2, cache_dir=tmp_path / "serial", progress=False)
    monkeypatch.setattr(training_module, "SEGMENT_MIN_FRAMES", 5)  # 47 frames: several segments
    monkeypatch.setattr(training_module, "_decode_workers", lambda frames: 2)
    parallel = TrainingDataset(root, None, 32, 2, cache_dir=tmp_path / "parallel", progress=False)
    for key in ("observation.images.front", "observation.images.wrist"):
        a = np.load(serial.cache_path / f"{key}.npy")
        b = np.load(parallel.cache_path / f"{key}.npy")
        assert a.any() and np.array_equal(a, b), key


def test_cache_is_reused_and_keyed(make_dataset, tmp_path, monkeypatch):
    root = make_dataset((6, 6))
    cache = tmp_path / "cache"
    first = TrainingDataset(root, None, 16, 2, cache_dir=cache, progress=False)
    assert first.cache_built_now and first[0]["observation.images.front"].shape == (3, 16, 16)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache exists")

    monkeypatch.setattr(training_module, "iter_frames", no_decoding)
    again = TrainingDataset(root, None, 16, 2, cache_dir=cache, progress=False)
    assert not again.cache_built_now and again.cache_path == first.cache_path
    assert torch.equal(again[7]["observation.images.wrist"], first[7]["observation.images.wrist"])
    # Another resolution, camera set or episode selection is another cache.
    monkeypatch.undo()
    other = TrainingDataset(root, ["front"], 24, 2, cache_dir=cache, progress=False)
    subset = TrainingDataset(LeRobotDataset(root, episodes=[1]), None, 16, 2, cache_dir=cache, progress=False)
    assert len({first.cache_path, other.cache_path, subset.cache_path}) == 3
    assert torch.equal(subset[0]["observation.images.front"], first[6]["observation.images.front"])
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_resize_and_image_features(make_dataset, tmp_path):
    root = make_dataset((5,), dtype="image")
    td = TrainingDataset(root, ["front"], (16, 24), 3, cache_dir=tmp_path / "c", progress=False)
    img = td[2]["observation.images.front"]
    assert img.shape == (3, 16, 24) and img.dtype == torch.uint8
    ref = LeRobotDataset(root)[2]["observation.images.front"].mean(dim=(1, 2)) * 255
    np.testing.assert_allclose(img.float().mean(dim=(1, 2)).numpy(), ref.numpy(), atol=3.0)


def test_dataloader_workers_and_augment(make_dataset, tmp_path):
    root = make_dataset((10, 10))
    td = TrainingDataset(
        root, None, 32, 4, augment=default_augment(), cache_dir=tmp_path / "c", progress=False
    )
    loader = torch.utils.data.DataLoader(td, batch_size=8, shuffle=True, num_workers=2)
    batch = next(iter(loader))
    assert batch["observation.images.front"].shape == (8, 3, 32, 32)
    assert batch["observation.images.front"].dtype == torch.uint8
    assert batch["action"].shape == (8, 4, 4) and batch["action_is_pad"].dtype == torch.bool
    assert len(batch["task"]) == 8 and isinstance(batch["task"][0], str)


def test_bad_arguments(make_dataset, tmp_path):
    root = make_dataset((4,))
    with pytest.raises(
        ValueError, match=r"cameras \['side'\] not in the dataset; available: \['front', 'wrist'\]"
    ):
        TrainingDataset(root, ["side"], 32, 4, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="chunk_size=0"):
        TrainingDataset(root, None, 32, 0, cache_dir=tmp_path / "c", progress=False)


def test_augmentations():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    for aug in (RandomShift(3), RandomCrop((0.7, 0.9)), ColorJitter(0.3, 0.3, 0.3), default_augment()):
        out = aug(image)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        assert not torch.equal(out, image)
    # a shift moves content: the shifted image equals a translated crop of the original
    shifted = RandomShift(0)(image)
    assert torch.equal(shifted, image)
    flat = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    assert torch.equal(RandomShift(2)(flat), flat)  # replicate padding: no black borders
    with pytest.raises(ValueError, match="uint8 \\(3, H, W\\)"):
        RandomShift(2)(image.float())
