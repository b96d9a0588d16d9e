"""`fastvla dataset info --verify`, `fastvla dataset repair`, and paths that must never leave the dataset."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastvla.cli import main
from fastvla.datasets import DatasetFormatError, LeRobotDataset, LeRobotDatasetWriter
from fastvla.datasets.recovery import repair
from fastvla.datasets.validation import inside_root
from fastvla.datasets.verify import verify

DATA = "data/chunk-000/file-000.parquet"


def test_verify_cli_exit_codes(make_dataset, capsys):
    root = make_dataset(lengths=(5, 4), cameras=("front",), size=16)
    assert main(["dataset", "info", str(root), "--verify"]) == 0
    assert "OK: every data and video file matches the metadata" in capsys.readouterr().out
    mp4 = root / "videos/observation.images.front/chunk-000/file-000.mp4"
    mp4.write_bytes(mp4.read_bytes()[:-300])
    assert main(["dataset", "info", str(root), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "problem(s)" in out and "file-000.mp4" in out


def test_info_reports_broken_metadata_without_traceback(make_dataset, capsys):
    root = make_dataset(lengths=(3,), cameras=("front",), size=16)
    info = json.loads((root / "meta/info.json").read_text())
    info["fps"] = "ten"
    (root / "meta/info.json").write_text(json.dumps(info))
    assert main(["dataset", "info", str(root)]) == 2  # a user error (fastvla.cli): one line, no traceback
    err = capsys.readouterr().err
    assert "fps='ten' must be a positive integer" in err and "Traceback" not in err


def test_repair_reconciles_totals_and_leftovers(make_dataset, capsys):
    root = make_dataset(lengths=(5, 4), cameras=("front",), size=16)
    # what a kill -9 between the data write and the metadata commit leaves: extra rows, lagging totals
    table = pq.read_table(root / DATA)
    last = table.slice(5, 4)
    uncommitted = last.set_column(
        last.column_names.index("episode_index"), "episode_index", pa.array([2] * 4)
    )
    pq.write_table(pa.concat_tables([table, uncommitted]), root / DATA)
    info = json.loads((root / "meta/info.json").read_text())
    info["total_frames"], info["total_episodes"] = 3, 1
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / ".staging").mkdir()
    report = verify(root)
    assert not report.ok and any("total_frames=3" in p for p in report.problems)
    assert main(["dataset", "repair", str(root)]) == 0
    out = capsys.readouterr().out
    assert "total_frames: 3 -> 9" in out and "staging" in out and "dropped 4 uncommitted rows" in out
    assert pq.read_table(root / DATA).num_rows == 9
    assert verify(root).ok
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 2
    assert repair(root) == []  # idempotent


@pytest.mark.parametrize(
    "template", ["../outside/{chunk_index}-{file_index}.parquet", "/tmp/x/{chunk_index}.pq"]
)
def test_writer_and_recovery_never_leave_the_root(make_dataset, helpers, tmp_path, template):
    root = make_dataset(lengths=(3,), cameras=("front",), size=16)
    before = (root / DATA).read_bytes()
    info = json.loads((root / "meta/info.json").read_text())
    info["data_path"] = template
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match="outside the dataset folder"):
        LeRobotDatasetWriter(root)
    with pytest.raises(DatasetFormatError, match="outside the dataset folder"):
        repair(root)
    assert (root / DATA).read_bytes() == before  # recovery did not delete the real data file
    assert not (tmp_path / "outside").exists()


def test_symlink_escape_refused_for_writes_but_followed_for_reads(tmp_path):
    root, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    (root / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "data" / "link").symlink_to(elsewhere)
    # reads: lexical check only (the hub cache stores files as symlinks into its blobs/ folder)
    assert inside_root(root, "data/link/f.parquet", "test") == root / "data/link/f.parquet"
    with pytest.raises(DatasetFormatError, match="through a symlink"):
        inside_root(root, "data/link/f.parquet", "test", strict=True)


def test_nan_opt_in(make_dataset):
    root = make_dataset(lengths=(3,), cameras=("front",), size=16)
    table = pq.read_table(root / DATA)
    values = table.column("action").to_pylist()
    values[1][0] = float("nan")
    column = pa.array(values, table.schema.field("action").type)
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), root / DATA)
    with pytest.raises(DatasetFormatError, match=r"episode 0 frame 1: feature 'action' holds NaN"):
        LeRobotDataset(root)
    ds = LeRobotDataset(root, allow_nonfinite=True)
    assert ds[1]["action"].isnan().any()


def test_v21_non_utf8_task(tmp_path, lerobot_fixtures):
    root = tmp_path / "v21"
    shutil.copytree(lerobot_fixtures / "sim_2cam_video_v21", root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    tasks = root / "meta/tasks.jsonl"
    tasks.write_bytes(tasks.read_bytes().replace(b"red", b"r\xffd", 1))
    with pytest.raises(DatasetFormatError, match=r"tasks\.jsonl is not UTF-8"):
        LeRobotDataset(root)
