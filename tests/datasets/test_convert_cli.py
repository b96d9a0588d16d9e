"""v2.1 -> v3.0 conversion and the ``fastvla dataset`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastvla.cli import main
from fastvla.datasets import LeRobotDataset
from fastvla.datasets.convert import convert_v21_to_v30
from fastvla.datasets.video import video_info


def test_convert_v21_matches_lerobot_read_back(lerobot_fixtures, helpers, tmp_path):
    src = lerobot_fixtures / "sim_2cam_video_v21"
    exp = helpers.load_expected(lerobot_fixtures, "sim_2cam_video_v21")
    out = convert_v21_to_v30(src, tmp_path / "v30", progress=False)
    ds = LeRobotDataset(out)
    assert ds.meta.version == "v3.0" and len(ds) == exp["total_frames"] and ds.meta.tasks == exp["tasks"]
    for idx, ref in exp["frames"].items():
        item = ds[int(idx)]
        assert item["action"].tolist() == ref["action"] and item["task"] == ref["task"]
        assert abs(float(item["timestamp"]) - ref["timestamp"]) <= 1e-6
        for cam, mean in ref["camera_mean_per_channel"].items():
            np.testing.assert_allclose(item[cam].mean(dim=(1, 2)).numpy(), mean, atol=2e-3, rtol=0)
    query = exp["delta_timestamps_query"]
    item = LeRobotDataset(out, delta_timestamps=query["delta_timestamps"])[query["index"]]
    assert (
        item["action"].tolist() == query["action"]
        and item["action_is_pad"].tolist() == query["action_is_pad"]
    )
    # videos were stream-copied into one file per camera: all 75 frames, same codec
    mp4 = out / "videos/observation.images.front/chunk-000/file-000.mp4"
    assert video_info(mp4)["frames"] == 75 and video_info(mp4)["codec"] in ("libdav1d", "av1")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "av1"
    stats = json.loads((out / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], exp["stats_sample"]["action"]["mean"], rtol=1e-6)
    assert "q01" in stats["action"]  # computed during conversion (v2.1 has no quantiles)
    with pytest.raises(FileExistsError, match="exists"):
        convert_v21_to_v30(src, out, progress=False)


def test_cli_info_view_convert(make_dataset, lerobot_fixtures, tmp_path, capsys):
    root = make_dataset((6, 8))
    assert main(["dataset", "info", str(root)]) == 0
    text = capsys.readouterr().out
    assert "LeRobot v3.0" in text and "14 (1.4 s at 10 fps)" in text and "observation.images.front" in text
    assert main(["dataset", "info", str(root), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["episodes"] == 2 and facts["episode_length"] == {"min": 6, "mean": 7.0, "max": 8}
    assert main(["dataset", "view", str(root), "--episode", "1", "--out-dir", str(tmp_path / "view")]) == 0
    video = tmp_path / "view/episode_1.mp4"
    plot = tmp_path / "view/episode_1.png"
    meta = video_info(video)
    assert meta["frames"] == 8 and meta["width"] > 2 * 32 and meta["height"] > 32
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "converted"
    assert main(["dataset", "convert", str(lerobot_fixtures / "sim_2cam_video_v21"), str(out)]) == 0
    assert LeRobotDataset(out).meta.version == "v3.0"


def test_append_to_converted_dataset(lerobot_fixtures, tmp_path):
    """Converted episodes lack image quantiles; appended ones have them: stats still aggregate."""
    from fastvla.datasets import LeRobotDatasetWriter

    out = convert_v21_to_v30(lerobot_fixtures / "sim_2cam_video_v21", tmp_path / "v30", progress=False)
    writer = LeRobotDatasetWriter(out)
    img = np.full((64, 64, 3), 128, np.uint8)
    for t in range(5):
        state = np.full(7, t, np.float32)
        frame = {"observation.images.front": img, "observation.images.wrist": img}
        writer.add_frame({**frame, "observation.state": state, "action": -state}, task="new task")
    writer.save_episode()
    writer.finalize()
    LeRobotDatasetWriter(out).finalize()  # re-open: recovery re-aggregates from the episodes parquet
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4 and len(ds) == 80 and ds[79]["task"] == "new task"
    assert ds.meta.stats["observation.state"]["count"].tolist() == [80]
    assert float(ds[77]["observation.images.front"].mean()) == pytest.approx(128 / 255, abs=0.01)
