"""The reader against datasets written by lerobot itself (shared fixtures with lerobot's read-back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvla.datasets import LeRobotDataset

FIXTURES = ["sim_2cam_video_v30", "sim_2cam_video_v21"]


@pytest.fixture(params=FIXTURES)
def fixture(request, lerobot_fixtures, helpers):
    name = request.param
    return lerobot_fixtures / name, helpers.load_expected(lerobot_fixtures, name)


def _frame_ids(expected):
    return [int(k) for k in expected["frames"]]


def test_metadata_matches_lerobot(fixture):
    root, exp = fixture
    ds = LeRobotDataset(root)
    meta = ds.meta
    assert meta.version == exp["codebase_version"]
    assert meta.fps == exp["fps"]
    assert meta.total_frames == exp["total_frames"] == len(ds) == exp["len_dataset"]
    assert meta.total_episodes == exp["total_episodes"] == ds.num_episodes
    assert meta.robot_type == exp["robot_type"]
    assert meta.camera_keys == exp["camera_keys"]
    assert meta.video_keys == exp["video_keys"]
    assert meta.image_keys == exp["image_keys"]
    assert meta.tasks == exp["tasks"]
    for key, spec in exp["features"].items():
        assert meta.features[key]["dtype"] == spec["dtype"]
        assert list(meta.features[key]["shape"]) == spec["shape"]
        assert meta.features[key]["names"] == spec["names"]
    for ours, theirs in zip(meta.episodes, exp["episodes"]):
        for key, value in theirs.items():
            assert ours[key] == value, key


def test_frames_match_lerobot(fixture):
    root, exp = fixture
    ds = LeRobotDataset(root)
    assert exp["frame_indices"]["last"] == len(ds) - 1
    for idx in _frame_ids(exp):
        item = ds[idx]
        ref = exp["frames"][str(idx)]
        for key in ("observation.state", "action"):
            assert item[key].dtype == torch.float32
            assert item[key].tolist() == ref[key]  # exact
        for key in ("episode_index", "frame_index", "index", "task_index"):
            assert item[key].dtype == torch.int64 and item[key].ndim == 0
            assert int(item[key]) == ref[key]
        assert abs(float(item["timestamp"]) - ref["timestamp"]) <= 1e-6
        assert item["task"] == ref["task"]
        for cam, mean in ref["camera_mean_per_channel"].items():
            tensor = ref["camera_tensor"][cam]
            assert list(item[cam].shape) == tensor["shape"] and item[cam].dtype == torch.float32
            np.testing.assert_allclose(item[cam].mean(dim=(1, 2)).numpy(), mean, atol=2e-3, rtol=0)
            assert abs(float(item[cam].min()) - tensor["min"]) < 0.05
            assert abs(float(item[cam].max()) - tensor["max"]) < 0.05


def test_delta_timestamps_window_and_pad(fixture):
    root, exp = fixture
    query = exp["delta_timestamps_query"]
    ds = LeRobotDataset(root, delta_timestamps=query["delta_timestamps"])
    item = ds[query["index"]]
    assert list(item["action"].shape) == query["action_shape"]
    assert item["action"].tolist() == query["action"]
    assert item[query["padding_key"]].tolist() == query["action_is_pad"]
    assert sorted(item) == query["keys_returned"]


def test_stats_match_lerobot(fixture):
    root, exp = fixture
    stats = LeRobotDataset(root).meta.stats
    for key, ref in exp["stats_sample"].items():
        for name, value in ref.items():
            np.testing.assert_allclose(np.asarray(stats[key][name], float), value, rtol=1e-12, atol=1e-12)
    if exp["codebase_version"] == "v3.0":
        assert {"q01", "q99"} <= set(stats["action"])


def test_episode_selection(fixture):
    root, exp = fixture
    ds = LeRobotDataset(root, episodes=[1], delta_timestamps={"action": [-0.1, 0.0]})
    assert len(ds) == exp["episodes"][1]["length"]
    first = ds[0]
    assert int(first["episode_index"]) == 1
    assert int(first["index"]) == exp["episodes"][0]["length"]
    assert first["action_is_pad"].tolist() == [True, False]
    assert torch.equal(first["action"][0], first["action"][1])  # clamped to the episode's first frame
    ref = exp["frames"]["44"]  # last frame of episode 1
    last = ds[len(ds) - 1]
    assert last["action"][1].tolist() == ref["action"]
    with pytest.raises(ValueError, match="episodes \\[7\\] not in the dataset"):
        LeRobotDataset(root, episodes=[7])


def test_bad_delta_timestamps(lerobot_fixtures):
    root = lerobot_fixtures / "sim_2cam_video_v30"
    with pytest.raises(ValueError, match="not multiples of 1/fps"):
        LeRobotDataset(root, delta_timestamps={"action": [0, 0.05]})
    with pytest.raises(KeyError, match="not a feature"):
        LeRobotDataset(root, delta_timestamps={"actions": [0]})


def test_split_by_episode_and_normalizer(lerobot_fixtures):
    from fastvla.datasets import split_episodes
    from fastvla.normalize import Normalizer

    train, val = split_episodes(10, val_fraction=0.2, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(10)) and not set(train) & set(val)
    assert split_episodes(10, 0.2, seed=3) == (train, val)  # deterministic
    assert split_episodes([4, 7], 0.1)[1] != []  # at least one validation episode
    root = lerobot_fixtures / "sim_2cam_video_v30"
    tr, va = split_episodes(3, val_fraction=0.34, seed=0)
    ds_train, ds_val = LeRobotDataset(root, episodes=tr), LeRobotDataset(root, episodes=va)
    assert len(ds_train) + len(ds_val) == 75
    eps_train = set(ds_train.columns["episode_index"].tolist())
    assert eps_train == set(tr) and set(ds_val.columns["episode_index"].tolist()) == set(va)
    # dataset statistics drive every normalisation mode; quantile maps q01/q99 to -1/1
    stats = LeRobotDataset(root).meta.stats
    norm = Normalizer(stats, {"action": "quantile", "observation.state": "mean_std"})
    q = np.stack([stats["action"]["q01"], stats["action"]["q99"]]).astype(np.float32)
    np.testing.assert_allclose(norm.normalize("action", q), [[-1] * 7, [1] * 7], atol=1e-5)
    mean = np.asarray(stats["observation.state"]["mean"], np.float32)
    np.testing.assert_allclose(norm.normalize("observation.state", mean), 0, atol=1e-6)


def test_broken_torchcodec_falls_back_to_pyav(lerobot_fixtures, monkeypatch):
    from fastvla.datasets import video

    def broken(path, timestamps):
        raise RuntimeError("libavcodec.so.61: cannot open shared object file")

    monkeypatch.setattr(video, "_torchcodec_decode", broken)
    monkeypatch.setattr(video, "_TORCHCODEC_BROKEN", False)
    ds = LeRobotDataset(lerobot_fixtures / "sim_2cam_video_v30")  # video_backend="auto"
    with pytest.warns(UserWarning, match="decoding with PyAV instead"):
        item = ds[3]
    assert item["observation.images.front"].shape == (3, 64, 64)
    with pytest.raises(RuntimeError, match="libavcodec"):
        LeRobotDataset(lerobot_fixtures / "sim_2cam_video_v30", video_backend="torchcodec")[3]
