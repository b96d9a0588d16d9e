"""Broken datasets fail with errors that name the problem and the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fastvla.datasets import DatasetFormatError, LeRobotDataset, LeRobotDatasetWriter, VideoDecodeError


@pytest.fixture
def v30_copy(tmp_path, lerobot_fixtures):
    dst = tmp_path / "copy"
    shutil.copytree(lerobot_fixtures / "sim_2cam_video_v30", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_missing_info_json(v30_copy, tmp_path):
    (v30_copy / "meta/info.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"meta/info\.json not found.*not a LeRobot dataset root"):
        LeRobotDataset(v30_copy)
    with pytest.raises(DatasetFormatError, match="does not exist"):
        LeRobotDataset(tmp_path / "nowhere")


@pytest.mark.parametrize("version", ["v2.0", "v1.6", None])
def test_unsupported_version(v30_copy, version):
    info = json.loads((v30_copy / "meta/info.json").read_text())
    info["codebase_version"] = version
    (v30_copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(
        DatasetFormatError, match=rf"unsupported LeRobot codebase_version {version!r}.*'v3.0', 'v2.1'"
    ):
        LeRobotDataset(v30_copy)


def test_missing_video_file(v30_copy):
    (v30_copy / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()
    # v3.0 video files are checked (header only) at open, so the open names the file
    with pytest.raises(
        VideoDecodeError, match=r"observation\.images\.wrist/chunk-000/file-000\.mp4 is missing"
    ):
        LeRobotDataset(v30_copy)


def test_truncated_video(v30_copy):
    path = v30_copy / "videos/observation.images.front/chunk-000/file-000.mp4"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(VideoDecodeError, match=r"file-000\.mp4"):
        LeRobotDataset(v30_copy)[70]


def test_truncated_parquet(v30_copy):
    path = v30_copy / "data/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetFormatError, match=r"file-000\.parquet is unreadable.*truncated or corrupt"):
        LeRobotDataset(v30_copy)


def test_truncated_episodes_metadata(v30_copy):
    path = v30_copy / "meta/episodes/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetFormatError, match="unreadable"):
        LeRobotDataset(v30_copy)


def test_shape_mismatch_between_info_and_data(v30_copy):
    info = json.loads((v30_copy / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [6]
    (v30_copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"'observation.state' has 7 values per frame.*shape \[6\]"):
        LeRobotDataset(v30_copy)


def test_episode_length_mismatch(v30_copy):
    import pyarrow.parquet as pq

    path = v30_copy / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 70), path)
    with pytest.raises(DatasetFormatError, match=r"episode 2 has 25 rows .* says length 30"):
        LeRobotDataset(v30_copy)


def test_writer_refuses_v21_and_non_dataset_folders(tmp_path, lerobot_fixtures):
    with pytest.raises(DatasetFormatError, match="fastvla dataset convert"):
        LeRobotDatasetWriter(lerobot_fixtures / "sim_2cam_video_v21")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        LeRobotDatasetWriter(
            tmp_path / "junk", fps=10, features={"action": {"dtype": "float32", "shape": (2,)}}
        )
    with pytest.raises(ValueError, match="pass fps and features"):
        LeRobotDatasetWriter(tmp_path / "new")
    with pytest.raises(ValueError, match="needs shape \\(H, W, 3\\)"):
        LeRobotDatasetWriter(
            tmp_path / "new", fps=10, features={"observation.images.a": {"dtype": "video", "shape": (8, 8)}}
        )
    with pytest.raises(ValueError, match="even height and width"):
        w = LeRobotDatasetWriter(
            tmp_path / "odd",
            fps=10,
            features={"observation.images.a": {"dtype": "video", "shape": (9, 9, 3)}},
        )
        w.add_frame({"observation.images.a": np.zeros((9, 9, 3), np.uint8)}, task="t")
