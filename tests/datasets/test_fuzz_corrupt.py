"""Corrupted-dataset fuzz suite: every corruption of a small dataset ends in an error naming the file.

A pristine dataset (one h264 camera, one PNG camera, state, action; 3 episodes) is written once with the
project's writer. Each case copies it, corrupts one thing, then reads everything (open + every item). A
case in ``BROKEN`` must raise ``DatasetFormatError`` or ``VideoDecodeError`` whose message names the file,
and ``verify`` must report it too. A case in ``HARMLESS`` must read back exactly the pristine values (the
reason is stated); those marked ``flag=True`` are leftovers of a crash that ``verify`` still reports and
``repair`` clears. The counts are quoted in docs/datasets.md ("Validation").
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fastvla.datasets import DatasetFormatError, LeRobotDataset, LeRobotDatasetWriter, VideoDecodeError
from fastvla.datasets.recovery import repair
from fastvla.datasets.verify import verify
from fastvla.datasets.video import VideoEncoder, concat_videos, truncate_video

FPS = 10
LENGTHS = (4, 3, 5)
VIDEO = "observation.images.front"
IMAGE = "observation.images.wrist"
INFO = "meta/info.json"
TASKS = "meta/tasks.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
DATA = "data/chunk-000/file-000.parquet"
MP4 = f"videos/{VIDEO}/chunk-000/file-000.mp4"
STATS = "meta/stats.json"


def _image(episode: int, step: int, shift: int = 0) -> np.ndarray:
    img = np.zeros((16, 16, 3), np.uint8)
    img[:] = (30 * episode + 15 * step + shift) % 220 + 20
    img[4:8, step % 12 : step % 12 + 4] = 240
    return img


def _write(root: Path) -> None:
    features = {
        VIDEO: {"dtype": "video", "shape": (16, 16, 3)},
        IMAGE: {"dtype": "image", "shape": (16, 16, 3)},
        "observation.state": {"dtype": "float32", "shape": (3,)},
        "action": {"dtype": "float32", "shape": (3,)},
    }
    with LeRobotDatasetWriter(root, fps=FPS, features=features, codec="h264") as writer:
        for e, length in enumerate(LENGTHS):
            for t in range(length):
                state = np.array([e, t, 0.5], np.float32)
                frame = {VIDEO: _image(e, t), IMAGE: _image(e, t, 60), "observation.state": state}
                writer.add_frame({**frame, "action": -state}, task=f"task {e % 2}")
            writer.save_episode()


def read_all(root: Path) -> list[dict]:
    ds = LeRobotDataset(root, video_backend="pyav")
    return [ds[i] for i in range(len(ds))]


# ------------------------------------------------------------------------------------------- mutations
def edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = json.loads((root / rel).read_text())
        change(data)
        (root / rel).write_text(json.dumps(data))  # NaN is written as the bare token NaN

    return apply


def edit_info(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return edit_json(INFO, change)


def setter(*keys: str, value: object) -> Callable[[dict], None]:
    def change(info: dict) -> None:
        target = info
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def deleter(*keys: str) -> Callable[[dict], None]:
    def change(info: dict) -> None:
        target = info
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def edit_table(rel: str, change: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        pq.write_table(change(pq.read_table(path)), path)

    return apply


def set_cell(column: str, row: int, value: object, type_: pa.DataType | None = None) -> Callable:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        values[row] = value
        i = table.column_names.index(column)
        return table.set_column(i, column, pa.array(values, type_ or table.schema.field(column).type))

    return change


def shift_column(column: str, episode: int, by: float) -> Callable:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        eps = table.column("episode_index").to_pylist()
        values = [v + by if e == episode else v for v, e in zip(values, eps)]
        i = table.column_names.index(column)
        return table.set_column(i, column, pa.array(values, table.schema.field(column).type))

    return change


def truncate(rel: str, keep: float | int) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = (root / rel).read_bytes()
        n = int(len(data) * keep) if isinstance(keep, float) else keep
        (root / rel).write_bytes(data[:n])  # n < 0: cut that many bytes off the end

    return apply


def write_bytes(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(data)


def delete(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return apply


def escape_with_copy(name: str, template: str, real: str, absolute: bool = False) -> Callable[[Path], None]:
    """Point a path template outside the dataset, at a valid copy of the real file (a naive reader works)."""

    def apply(root: Path) -> None:
        outside = root.parent / f"outside-{root.name}"
        copy = outside / Path(real).relative_to(real.split("/")[0])
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / real, copy)
        prefix = str(outside) if absolute else f"../outside-{root.name}"
        edit_info(setter(name, value=f"{prefix}/{template}"))(root)

    return apply


def rewrite_video(frames: int | None = None, size: int = 16) -> Callable[[Path], None]:
    """Re-encode the camera video: fewer frames, or another resolution."""

    def apply(root: Path) -> None:
        encoder = VideoEncoder(root / MP4, FPS, size, size)
        e_t = [(e, t) for e, n in enumerate(LENGTHS) for t in range(n)]
        for e, t in e_t[: frames if frames is not None else len(e_t)]:
            encoder.add(np.resize(_image(e, t), (size, size, 3)))
        encoder.close()

    return apply


def faststart_truncated(root: Path) -> None:
    """Header (moov) first, then cut the frame data: the file opens but the decoder runs out mid-stream."""
    path, tmp = root / MP4, root / "moved.mp4"
    with av.open(str(path)) as src, av.open(str(tmp), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0], opaque=True)
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = tmp.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    tmp.unlink()


def fewer_frames(root: Path) -> None:
    tmp = root / "short.mp4"
    truncate_video(root / MP4, 0.75, tmp)
    tmp.replace(root / MP4)


def leftover_frames(root: Path) -> None:
    tmp = root / "long.mp4"
    concat_videos([(root / MP4, 0.0), (root / MP4, sum(LENGTHS) / FPS)], tmp)
    tmp.replace(root / MP4)


def leftover_rows(table: pa.Table) -> pa.Table:
    last = table.filter(pc.equal(table.column("episode_index"), 2))
    extra = last.set_column(last.column_names.index("episode_index"), "episode_index", pa.array([3] * 5))
    return pa.concat_tables([table, extra])


def tasks_table(tasks: list, indices: list, task_type: pa.DataType | None = None) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        table = pa.table(
            {"task_index": pa.array(indices, pa.int64()), "task": pa.array(tasks, task_type or pa.string())}
        )
        pq.write_table(table, root / TASKS)

    return apply


def leftover_staging(root: Path) -> None:
    (root / ".staging").mkdir()
    (root / ".staging" / f"{VIDEO}.mp4").write_bytes(b"partial")


def corrupt_png(table: pa.Table) -> pa.Table:
    values = table.column(IMAGE).to_pylist()
    values[5] = {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "path": None}
    i = table.column_names.index(IMAGE)
    return table.set_column(i, IMAGE, pa.array(values, table.schema.field(IMAGE).type))


def swap_rows(table: pa.Table) -> pa.Table:
    order = list(range(table.num_rows))
    order[1], order[2] = order[2], order[1]
    return table.take(order)


def relabel_row(table: pa.Table) -> pa.Table:
    return set_cell("episode_index", 3, 1)(table)


# ------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    mutate: Callable[[Path], None]
    names: str  # a path fragment the error message must contain
    reason: str = ""  # for harmless cases: why the data read back is provably the same
    flag: bool = False  # harmless to read, but verify reports it (crash leftovers)


BROKEN: dict[str, Case] = {
    # meta/info.json
    "info_truncated": Case(truncate(INFO, 0.5), INFO),
    "info_empty": Case(write_bytes(INFO, b""), INFO),
    "info_not_utf8": Case(lambda r: (r / INFO).write_bytes(b"\xff\xfe" + (r / INFO).read_bytes()), INFO),
    "info_is_list": Case(write_bytes(INFO, b"[1, 2]"), INFO),
    "info_no_version": Case(edit_info(deleter("codebase_version")), INFO),
    "info_unknown_version": Case(edit_info(setter("codebase_version", value="v9.9")), INFO),
    "fps_string": Case(edit_info(setter("fps", value="ten")), INFO),
    "fps_negative": Case(edit_info(setter("fps", value=-10)), INFO),
    "fps_zero": Case(edit_info(setter("fps", value=0)), INFO),
    "fps_fraction": Case(edit_info(setter("fps", value=7.5)), INFO),
    "fps_bool": Case(edit_info(setter("fps", value=True)), INFO),
    "fps_null": Case(edit_info(setter("fps", value=None)), INFO),
    "features_list": Case(edit_info(setter("features", value=[])), INFO),
    "feature_without_dtype": Case(edit_info(deleter("features", "observation.state", "dtype")), INFO),
    "feature_unknown_dtype": Case(edit_info(setter("features", "action", "dtype", value="floaty")), INFO),
    "feature_shape_string": Case(edit_info(setter("features", "action", "shape", value="3")), INFO),
    "feature_shape_zero": Case(edit_info(setter("features", "action", "shape", value=[0])), INFO),
    "camera_shape_2d": Case(edit_info(setter("features", VIDEO, "shape", value=[16, 16])), INFO),
    "index_feature_missing": Case(edit_info(deleter("features", "timestamp")), INFO),
    "feature_shape_mismatch": Case(edit_info(setter("features", "action", "shape", value=[5])), DATA),
    "total_frames_negative": Case(edit_info(setter("total_frames", value=-1)), INFO),
    "chunks_size_zero": Case(edit_info(setter("chunks_size", value=0)), INFO),
    "data_path_not_string": Case(edit_info(setter("data_path", value=5)), INFO),
    "data_path_unknown_field": Case(edit_info(setter("data_path", value="data/{nope}.parquet")), INFO),
    "data_path_escapes": Case(
        escape_with_copy("data_path", "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", DATA), INFO
    ),
    "data_path_absolute": Case(
        escape_with_copy("data_path", "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", DATA, True),
        INFO,
    ),
    "video_path_escapes": Case(
        escape_with_copy("video_path", "{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", MP4),
        INFO,
    ),
    # meta/tasks.parquet
    "tasks_truncated": Case(truncate(TASKS, 0.5), TASKS),
    "tasks_missing": Case(delete(TASKS), TASKS),
    "task_not_utf8": Case(tasks_table([b"\xff\xfetask", b"task 1"], [0, 1], pa.binary()), TASKS),
    "task_null": Case(tasks_table([None, "task 1"], [0, 1]), TASKS),
    "task_index_duplicate": Case(tasks_table(["task 0", "task 1"], [0, 0]), TASKS),
    "task_index_undefined": Case(tasks_table(["task 0"], [0]), DATA),
    "tasks_column_missing": Case(edit_table(TASKS, lambda t: t.drop(["task_index"])), TASKS),
    # meta/episodes
    "episodes_truncated": Case(truncate(EPISODES, 0.5), EPISODES),
    "episodes_missing": Case(delete("meta/episodes"), "meta/episodes"),
    "episode_duplicate_row": Case(
        edit_table(EPISODES, lambda t: pa.concat_tables([t, t.slice(1, 1)])), EPISODES
    ),
    "from_timestamp_shift": Case(
        edit_table(EPISODES, shift_column(f"videos/{VIDEO}/from_timestamp", 1, 0.1)), EPISODES
    ),
    "video_span_shift_middle": Case(
        lambda r: [
            edit_table(EPISODES, shift_column(f"videos/{VIDEO}/{c}_timestamp", 1, 0.1))(r)
            for c in ("from", "to")
        ],
        EPISODES,
    ),
    "video_span_shift_last": Case(
        lambda r: [
            edit_table(EPISODES, shift_column(f"videos/{VIDEO}/{c}_timestamp", 2, 0.1))(r)
            for c in ("from", "to")
        ],
        MP4,
    ),
    "length_plus_one": Case(edit_table(EPISODES, shift_column("length", 1, 1)), EPISODES),
    "length_zero": Case(edit_table(EPISODES, set_cell("length", 0, 0)), EPISODES),
    "length_as_string": Case(
        edit_table(EPISODES, lambda t: t.set_column(2, "length", pc.cast(t["length"], pa.string()))), EPISODES
    ),
    "episode_index_negative": Case(edit_table(EPISODES, set_cell("episode_index", 0, -1)), EPISODES),
    "episode_column_missing": Case(edit_table(EPISODES, lambda t: t.drop(["length"])), EPISODES),
    "from_index_inconsistent": Case(edit_table(EPISODES, shift_column("dataset_from_index", 1, 1)), EPISODES),
    "data_file_index_dangling": Case(
        edit_table(EPISODES, set_cell("data/file_index", 1, 7)), "file-007.parquet"
    ),
    "video_file_index_dangling": Case(
        edit_table(EPISODES, set_cell(f"videos/{VIDEO}/file_index", 1, 7)), "file-007.mp4"
    ),
    # data parquet
    "data_truncated": Case(truncate(DATA, 0.5), DATA),
    "data_missing": Case(delete(DATA), DATA),
    "data_garbage": Case(write_bytes(DATA, bytes(range(256)) * 8), DATA),
    "data_nan_state": Case(
        edit_table(DATA, set_cell("observation.state", 5, [0.0, float("nan"), 0.5])), DATA
    ),
    "data_inf_action": Case(edit_table(DATA, set_cell("action", 9, [float("inf"), 0.0, 0.0])), DATA),
    "data_timestamp_shift": Case(edit_table(DATA, shift_column("timestamp", 1, 0.1)), DATA),
    "data_rows_swapped": Case(edit_table(DATA, swap_rows), DATA),
    "data_task_index_unknown": Case(edit_table(DATA, set_cell("task_index", 2, 99)), DATA),
    "data_duplicate_row": Case(edit_table(DATA, lambda t: pa.concat_tables([t, t.slice(0, 1)])), DATA),
    "data_row_relabelled": Case(edit_table(DATA, relabel_row), DATA),
    "data_column_missing": Case(edit_table(DATA, lambda t: t.drop(["action"])), DATA),
    "data_state_strings": Case(
        edit_table(
            DATA,
            lambda t: t.set_column(
                t.column_names.index("observation.state"),
                "observation.state",
                pa.array([["a", "b", "c"]] * t.num_rows),
            ),
        ),
        DATA,
    ),
    "data_null_state": Case(edit_table(DATA, set_cell("observation.state", 4, None)), DATA),
    "data_corrupt_png": Case(edit_table(DATA, corrupt_png), DATA),
    # video
    "video_truncated_half": Case(truncate(MP4, 0.5), MP4),
    "video_truncated_tail": Case(truncate(MP4, -200), MP4),
    "video_empty": Case(write_bytes(MP4, b""), MP4),
    "video_missing": Case(delete(MP4), MP4),
    "video_is_text": Case(write_bytes(MP4, b"not a video\n" * 50), MP4),
    "video_faststart_truncated": Case(faststart_truncated, MP4),
    "video_fewer_frames": Case(fewer_frames, MP4),
    "video_reencoded_other_size": Case(rewrite_video(size=32), MP4),
    # meta/stats.json
    "stats_truncated": Case(truncate(STATS, 0.5), STATS),
    "stats_is_list": Case(write_bytes(STATS, b"[]"), STATS),
    "stats_nan": Case(edit_json(STATS, setter("action", "mean", value=[float("nan")] * 3)), STATS),
    "stats_strings": Case(write_bytes(STATS, b'{"action": {"mean": ["a", "b", "c"]}}'), STATS),
}

# Corruptions only decoding finds: the open succeeds (it reads headers, not every frame or PNG) and the
# frames they touch raise; no read returns a wrong value. Every other broken case fails at open.
AT_READ = {
    "data_corrupt_png": "PNG bytes are decoded per item, not at open (decoding all would cost a full pass)",
    "video_truncated_tail": "the container header is intact; the missing frames are found when decoding",
    "video_faststart_truncated": "header first, frame data cut: frames before the cut decode correctly",
    "video_reencoded_other_size": "the size is checked on each decoded frame (one tuple comparison)",
}

HARMLESS: dict[str, Case] = {
    "info_extra_key": Case(
        edit_info(setter("comment", value="hello")), "", "unknown keys are ignored; lerobot ignores them too"
    ),
    "fps_integral_float": Case(
        edit_info(setter("fps", value=10.0)), "", "10.0 is the integer 10; validation normalises it to int"
    ),
    "video_path_null_default": Case(
        edit_info(setter("video_path", value=None)),
        "",
        "v3.0 falls back to the default template, which is exactly what the writer used",
    ),
    "stats_missing": Case(
        delete(STATS), "", "the reader recomputes statistics from the data; item values do not use stats"
    ),
    "total_frames_lagging": Case(
        edit_info(setter("total_frames", value=sum(LENGTHS) + 5)),
        INFO,
        "the reader counts frames from the episodes metadata (the commit point), never from info.json totals",
        flag=True,
    ),
    "leftover_rows": Case(
        edit_table(DATA, leftover_rows),
        DATA,
        "rows of an uncommitted episode (a crash mid-commit) are ignored: no saved episode references them",
        flag=True,
    ),
    "leftover_frames": Case(
        leftover_frames,
        MP4,
        "frames after the last saved episode are never looked up (each lookup is from_timestamp + timestamp)",
        flag=True,
    ),
    "leftover_staging": Case(
        leftover_staging, ".staging", "the staging folder is only used by the writer", flag=True
    ),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("pristine") / "ds"
    _write(root)
    return root, read_all(root)


def _copy(pristine_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(pristine_root, root)
    return root


def test_suite_size():
    assert len(BROKEN) + len(HARMLESS) >= 40 and len(BROKEN) >= 40


@pytest.mark.parametrize("name", list(BROKEN))
def test_corruption_is_reported(name, pristine, tmp_path):
    case = BROKEN[name]
    root = _copy(pristine[0], tmp_path)
    case.mutate(root)
    with pytest.raises((DatasetFormatError, VideoDecodeError)) as caught:
        if name in AT_READ:
            read_all(root)
        else:
            LeRobotDataset(root, video_backend="pyav")
    assert case.names in str(caught.value), str(caught.value)
    report = verify(root)
    assert not report.ok and any(case.names in p for p in report.problems), report.problems


@pytest.mark.parametrize("name", list(HARMLESS))
def test_harmless_change_reads_the_same(name, pristine, tmp_path):
    case = HARMLESS[name]
    root = _copy(pristine[0], tmp_path)
    case.mutate(root)
    items = read_all(root)
    assert len(items) == len(pristine[1])
    for got, want in zip(items, pristine[1]):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert (got[key] == value) if isinstance(value, str) else bool((got[key] == value).all()), key
    report = verify(root)
    if case.flag:  # a crash leftover: verify names it, repair clears it
        assert any(case.names in p for p in report.problems), report.problems
        repair(root)
        assert verify(root).ok, verify(root).problems
    else:
        assert report.ok, report.problems
