"""The v3.0 writer: round trips, lerobot's on-disk layout, roll-over, validation and appending."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from fastvla.datasets import DatasetMeta, FrameValidationError, LeRobotDataset, LeRobotDatasetWriter


def _check_round_trip(root, helpers, lengths, atol_mean):
    ds = LeRobotDataset(root)
    assert len(ds) == sum(lengths) and ds.num_episodes == len(lengths)
    worst = 0.0
    for idx in range(len(ds)):
        item = ds[idx]
        ep, t = int(item["episode_index"]), int(item["frame_index"])
        ref = helpers.frame_values(ep, t)
        assert item["observation.state"].tolist() == ref["observation.state"].tolist()
        assert item["action"].tolist() == ref["action"].tolist()
        assert int(item["index"]) == idx
        assert abs(float(item["timestamp"]) - t / helpers.fps) < 1e-6
        assert item["task"] == f"task {ep % 2}"
        for i, cam in enumerate(("front", "wrist")):
            src = helpers.frame_image(ep, t, 32, 50 * i).transpose(2, 0, 1) / 255.0
            err = np.abs(item[f"observation.images.{cam}"].numpy() - src)
            worst = max(worst, float(err.mean()))
            if atol_mean == 0:
                assert err.max() < 1e-6  # PNG is lossless
    assert worst <= atol_mean + 1e-6, worst


@pytest.mark.parametrize(("codec", "dtype", "atol_mean"), [("h264", "video", 0.02), ("h264", "image", 0.0)])
def test_round_trip(make_dataset, helpers, codec, dtype, atol_mean):
    lengths = (12, 9, 15)
    root = make_dataset(lengths, codec=codec, dtype=dtype)
    _check_round_trip(root, helpers, lengths, atol_mean)


@pytest.mark.slow
def test_round_trip_av1(make_dataset, helpers):
    root = make_dataset((8, 6), codec="av1")
    _check_round_trip(root, helpers, (8, 6), 0.03)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "av1"


def test_layout_matches_lerobot_v30(make_dataset, lerobot_fixtures):
    """Files, info.json keys, episodes/tasks/data parquet schemas as lerobot 0.6 writes them."""
    ref = lerobot_fixtures / "sim_2cam_video_v30"
    root = make_dataset((12, 9, 15))
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    ref_files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    assert files == ref_files
    info, ref_info = (json.loads((r / "meta/info.json").read_text()) for r in (root, ref))
    assert list(info) == list(ref_info)
    for key in ("data_path", "video_path", "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"):
        assert info[key] == ref_info[key]
    assert set(info["features"]["observation.images.front"]["info"]) == set(
        ref_info["features"]["observation.images.front"]["info"]
    )
    assert info["total_episodes"] == 3 and info["total_frames"] == 36 and info["splits"] == {"train": "0:3"}
    assert info["features"]["timestamp"] == ref_info["features"]["timestamp"]
    ours = pq.read_schema(root / "meta/episodes/chunk-000/file-000.parquet")
    theirs = pq.read_schema(ref / "meta/episodes/chunk-000/file-000.parquet")
    assert ours.names == theirs.names
    for name in theirs.names:
        assert str(ours.field(name).type) == str(theirs.field(name).type), name
    for rel in ("meta/tasks.parquet", "data/chunk-000/file-000.parquet"):
        ours, theirs = pq.read_schema(root / rel), pq.read_schema(ref / rel)
        assert ours.names == theirs.names
        # same types up to the vector length (the fixture has 7 joints, ours 4)
        assert [re.sub(r"\[\d+\]", "", str(t)) for t in ours.types] == [
            re.sub(r"\[\d+\]", "", str(t)) for t in theirs.types
        ]
        assert set(ours.metadata) == set(theirs.metadata)
    pandas_meta = json.loads(pq.read_schema(root / "meta/tasks.parquet").metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]
    hf = json.loads(pq.read_schema(root / "data/chunk-000/file-000.parquet").metadata[b"huggingface"])
    assert hf["info"]["features"]["action"] == {
        "feature": {"dtype": "float32", "_type": "Value"},
        "length": 4,
        "_type": "List",
    }
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["videos/observation.images.front/from_timestamp"] for e in episodes] == [0.0, 1.2, 2.1]
    assert [e["videos/observation.images.front/to_timestamp"] for e in episodes] == [1.2, 2.1, 3.6]
    assert [e["dataset_from_index"] for e in episodes] == [0, 12, 21]


def test_stats(make_dataset, helpers):
    root = make_dataset((12, 9))
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate(
        [[helpers.frame_values(e, t)["action"] for t in range(n)] for e, n in enumerate((12, 9))]
    )
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0), atol=1e-7)
    assert stats["action"]["count"] == [21]
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["index"]["max"] == [20.0]


def test_roll_over_by_size(make_dataset, helpers):
    lengths = (10, 10, 10, 10)
    root = make_dataset(lengths, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6, chunks_size=2)
    data_files = sorted(str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet"))
    assert data_files == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
        "data/chunk-001/file-001.parquet",
    ]
    assert len(list((root / "videos/observation.images.wrist").rglob("*.mp4"))) == 4
    episodes = DatasetMeta(root).episodes
    assert len(list((root / "meta/episodes").rglob("*.parquet"))) == 4  # episodes metadata rolls over too
    assert [(e["data/chunk_index"], e["data/file_index"]) for e in episodes] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert all(e["videos/observation.images.front/from_timestamp"] == 0.0 for e in episodes)
    _check_round_trip(root, helpers, lengths, 0.02)


def test_append(make_dataset, helpers):
    root = make_dataset((12, 9))
    writer = LeRobotDatasetWriter(root)
    assert writer.num_episodes == 2 and writer.num_frames == 21
    helpers.write_episodes(writer, (7,), first_episode=2)
    writer.finalize()
    _check_round_trip(root, helpers, (12, 9, 7), 0.02)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == 3 and info["total_frames"] == 28
    assert json.loads((root / "meta/stats.json").read_text())["action"]["count"] == [28]
    with pytest.raises(ValueError, match="features differ"):
        LeRobotDatasetWriter(root, fps=10, features=helpers.features(cameras=("front",)))


def test_validation_before_writing(tmp_path, helpers):
    root = tmp_path / "ds"
    writer = LeRobotDatasetWriter(root, fps=10, features=helpers.features())
    good = {
        "observation.images.front": helpers.frame_image(0, 0),
        "observation.images.wrist": helpers.frame_image(0, 0),
    }
    good.update(helpers.frame_values(0, 0))
    cases = {
        "missing features \\['action'\\]": {k: v for k, v in good.items() if k != "action"},
        "unknown features \\['observation.images.side'\\]": {
            **good,
            "observation.images.side": good["action"],
        },
        "'observation.state' has shape \\(5,\\), expected \\(4,\\)": {
            **good,
            "observation.state": np.zeros(5),
        },
        "'action' has dtype <U1": {**good, "action": np.array(["a"] * 4)},
        "'observation.images.front' has shape \\(16, 16, 3\\)": {
            **good,
            "observation.images.front": np.zeros((16, 16, 3), np.uint8),
        },
    }
    for message, frame in cases.items():
        with pytest.raises(FrameValidationError, match=message):
            writer.add_frame(frame, task="t")
    assert writer.episode_buffer_size == 0
    assert not (root / ".staging").exists() and not (root / "data").exists()
    with pytest.raises(ValueError, match="task string"):
        writer.add_frame(good)
    writer.add_frame(good, task="t")
    writer.save_episode()
    assert len(LeRobotDataset(root)) == 1


def test_finalize_drops_partial_episode(tmp_path, helpers):
    root = tmp_path / "ds"
    with LeRobotDatasetWriter(root, fps=10, features=helpers.features()) as writer:
        helpers.write_episodes(writer, (5,))
        frame = {f"observation.images.{c}": helpers.frame_image(1, 0) for c in ("front", "wrist")}
        writer.add_frame({**frame, **helpers.frame_values(1, 0)}, task="t")
    ds = LeRobotDataset(root)
    assert len(ds) == 5 and not (root / ".staging").exists()


def test_new_dataset_without_episodes_opens(tmp_path, helpers):
    root = tmp_path / "empty"
    LeRobotDatasetWriter(root, fps=10, features=helpers.features())
    ds = LeRobotDataset(root)
    assert len(ds) == 0 and ds.num_episodes == 0 and ds.meta.total_frames == 0
