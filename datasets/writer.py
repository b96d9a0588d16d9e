"""Writing LeRobot v3.0 datasets, the way lerobot 0.6 lays them out, crash-safely.

Layout (``root/``)::

    meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-000.parquet  videos/<key>/chunk-000/file-000.mp4

Many episodes share a data file and a video file per camera; a file rolls over to the next index when
it reaches ``data_files_size_in_mb`` / ``video_files_size_in_mb`` (and to the next chunk after
``chunks_size`` files). Each camera's frames are encoded while the episode is recorded, into a staging
file; :meth:`LeRobotDatasetWriter.save_episode` then stream-copies it onto the end of the dataset's
video file and rewrites the affected parquet files, every file through a temporary name and an atomic
rename, metadata last. A crash or SIGKILL therefore loses at most the episode being recorded: the
episodes parquet only ever names complete data, and re-opening the dataset for appending trims any
leftovers of the interrupted episode.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastvla.constants import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK, TASK_INDEX, TIMESTAMP
from fastvla.datasets import recovery
from fastvla.datasets.features import DEFAULT_FEATURES, normalize_features, validate_frame
from fastvla.datasets.metadata import (
    DEFAULT_DATA_PATH,
    DEFAULT_VIDEO_PATH,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    DatasetFormatError,
    InfoFeatures,
    load_info,
    read_parquet,
)
from fastvla.datasets.stats import STAT_KEYS, aggregate_stats, image_stats, numeric_stats, stats_to_json
from fastvla.datasets.validation import format_path
from fastvla.datasets.video import VideoEncoder, concat_videos
from fastvla.utils.io import atomic_write_bytes, atomic_write_text

STAGING = ".staging"
CODEBASE_VERSION = "v3.0"


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _hf_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The ``huggingface`` schema metadata ``datasets`` uses to type the parquet columns."""
    out: dict[str, Any] = {}
    for key, spec in features.items():
        if spec["dtype"] == "video":
            continue
        if spec["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif tuple(spec["shape"]) == (1,):
            out[key] = {"dtype": spec["dtype"], "_type": "Value"}
        elif len(spec["shape"]) == 2:  # depth maps: lerobot types 2-D features as datasets.Array2D
            out[key] = {"shape": list(spec["shape"]), "dtype": spec["dtype"], "_type": "Array2D"}
        else:
            value = {"dtype": spec["dtype"], "_type": "Value"}
            out[key] = {"feature": value, "length": int(np.prod(spec["shape"])), "_type": "List"}
    return {"info": {"features": out}}


def _arrow_type(spec: Mapping[str, Any]) -> pa.DataType:
    if spec["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    base = pa.from_numpy_dtype(np.dtype(spec["dtype"]))
    if tuple(spec["shape"]) == (1,):
        return base
    if len(spec["shape"]) == 2:
        return pa.list_(pa.list_(base))  # Array2D's storage: rows of values
    return pa.list_(base, int(np.prod(spec["shape"])))


def _flat_values(col: pa.Array) -> np.ndarray:
    """All values of a (possibly nested) list column, flattened."""
    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    return col.to_numpy(zero_copy_only=False)


def _numeric_stats(values: np.ndarray, spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-channel statistics of a vector; one statistic per 2-D map (depth), shaped ``(1, 1, 1)`` like an
    image channel's, so a depth map adds a few numbers to the metadata instead of H x W of them."""
    if len(spec["shape"]) != 2:
        return numeric_stats(values)
    stats = numeric_stats(np.asarray(values).reshape(-1))
    return {k: v if k == "count" else v.reshape(1, 1, 1) for k, v in stats.items()} | {
        "count": np.array([len(values)], dtype=np.int64)
    }


def _tasks_table(tasks: Mapping[str, int]) -> pa.Table:
    """``meta/tasks.parquet`` with pandas metadata making ``task`` the index, as lerobot writes it."""
    ordered = sorted(tasks.items(), key=lambda kv: kv[1])
    table = pa.table(
        {"task_index": pa.array([i for _, i in ordered], pa.int64()), "task": [t for t, _ in ordered]}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    file += 1
    return (chunk + 1, 0) if file >= chunks_size else (chunk, file)


class LeRobotDatasetWriter(InfoFeatures):
    """Creates or appends to a LeRobot v3.0 dataset.

    Args:
        root: dataset folder. If it holds a dataset, the writer appends to it (after trimming leftovers
            of an interrupted recording); otherwise ``fps`` and ``features`` are required to create one.
        fps: frame rate (create only).
        features: ``{key: {"dtype", "shape", "names"}}``; cameras with dtype "video" (mp4) or "image" (PNG
            inside the parquet) and shape (H, W, 3); numeric vectors with a numpy dtype (create only).
        robot_type: stored in ``info.json``.
        codec: "h264" (fast) or "av1" (lerobot's default). Appending keeps the dataset's codec.
        chunks_size: files per chunk folder.
        data_files_size_in_mb: roll-over size of data parquet files.
        video_files_size_in_mb: roll-over size of mp4 files.

    Example:
        >>> w = LeRobotDatasetWriter("out/ds", fps=10, features={  # doctest: +SKIP
        ...     "observation.images.front": {"dtype": "video", "shape": (64, 64, 3)},
        ...     "observation.state": {"dtype": "float32", "shape": (7,)},
        ...     "action": {"dtype": "float32", "shape": (7,)}})
        >>> for t in range(20):  # doctest: +SKIP
        ...     w.add_frame({"observation.images.front": img, "observation.state": s, "action": a},
        ...                 task="pick up the red cube")
        >>> w.save_episode(); w.finalize()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        fps: int | None = None,
        features: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        robot_type: str | None = None,
        codec: str = "h264",
        chunks_size: int = 1000,
        data_files_size_in_mb: float = 100,
        video_files_size_in_mb: float = 200,
    ):
        self.root = Path(root)
        if (self.root / INFO_PATH).is_file():
            self._open_existing(fps, features, codec)
        else:
            if fps is None or features is None:
                raise ValueError(
                    f"{self.root} holds no dataset yet: pass fps and features to create one "
                    "(or point root at an existing dataset to append)"
                )
            self._create(
                fps, features, robot_type, codec, chunks_size, data_files_size_in_mb, video_files_size_in_mb
            )
        self._reset_buffer()

    # ------------------------------------------------------------------ setup
    def _create(self, fps, features, robot_type, codec, chunks_size, data_mb, video_mb) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            raise FileExistsError(
                f"{self.root} exists and is not empty but has no meta/info.json; choose a new folder "
                "or delete it"
            )
        feats = normalize_features(features, int(fps), codec)
        has_video = any(f["dtype"] == "video" for f in feats.values())
        self.info: dict[str, Any] = {
            "codebase_version": CODEBASE_VERSION,
            "fps": int(fps),
            "features": feats,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": int(chunks_size),
            "data_files_size_in_mb": data_mb,
            "video_files_size_in_mb": video_mb,
            "data_path": DEFAULT_DATA_PATH,
            "video_path": DEFAULT_VIDEO_PATH if has_video else None,
            "robot_type": robot_type,
            "splits": {},
        }
        self.codec = codec
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self.recovery_actions: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_info()

    def _open_existing(self, fps, features, codec) -> None:
        self.info = load_info(self.root)
        if self.info["codebase_version"] != CODEBASE_VERSION:
            raise DatasetFormatError(
                f"{self.root} is a {self.info['codebase_version']} dataset; the writer appends to v3.0 only. "
                f"Convert it first: fastvla dataset convert {self.root} OUT"
            )
        if fps is not None and int(fps) != self.info["fps"]:
            raise ValueError(f"fps={fps} differs from the existing dataset's fps={self.info['fps']}")
        if features is not None:
            wanted = normalize_features(features, self.info["fps"], codec)
            have = {k: (v["dtype"], list(v["shape"])) for k, v in self.info["features"].items()}
            want = {k: (v["dtype"], list(v["shape"])) for k, v in wanted.items()}
            if have != want:
                raise ValueError(
                    f"features differ from the existing dataset at {self.root}: existing {have}, "
                    f"given {want}. "
                    "Write to a new folder, or record with the dataset's features."
                )
        codecs = {self.features[k]["info"]["video.codec"] for k in self.video_keys}
        self.codec = codecs.pop() if codecs else codec
        state = recovery.recover(self.root, self.info)
        self.tasks, self.episode_rows, self.stats = state.tasks, state.episode_rows, state.stats
        self.recovery_actions = state.actions
        self._write_meta()

    def _reset_buffer(self) -> None:
        self._frames: dict[str, list[Any]] = {}
        self._tasks_buffer: list[str] = []
        self._encoders: dict[str, VideoEncoder] = {}
        self._image_samples: dict[str, list[np.ndarray]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_episodes(self) -> int:
        """Saved episodes."""
        return len(self.episode_rows)

    @property
    def num_frames(self) -> int:
        """Saved frames."""
        return int(sum(r["length"] for r in self.episode_rows))

    @property
    def episode_buffer_size(self) -> int:
        """Frames added to the episode being recorded."""
        return len(self._tasks_buffer)

    # ------------------------------------------------------------------ recording
    def add_frame(self, frame: Mapping[str, Any], task: str | None = None) -> None:
        """Add one frame to the current episode.

        Args:
            frame: a value for every feature except the index features (``timestamp``, ``index``, ...).
            task: the instruction (or give it as ``frame["task"]``).

        Raises:
            FrameValidationError: wrong keys, shapes or dtypes; nothing is written.
        """
        task = task if task is not None else frame.get(TASK)
        if not isinstance(task, str) or not task:
            raise ValueError(f"each frame needs a task string (the instruction); got {task!r}")
        values = validate_frame(frame, self.features)
        step = self.episode_buffer_size
        for key, value in values.items():
            dtype = self.features[key]["dtype"]
            if dtype == "video":
                if key not in self._encoders:
                    staged = self.root / STAGING / f"{key}.mp4"
                    shape = self.features[key]["shape"]
                    self._encoders[key] = VideoEncoder(staged, self.fps, shape[0], shape[1], self.codec)
                self._encoders[key].add(value)
            elif dtype == "image":
                self._frames.setdefault(key, []).append(_png(value))
            else:
                self._frames.setdefault(key, []).append(value)
            if dtype in ("video", "image") and step % 2 == 0:
                stride = max(1, value.shape[0] // 64)
                self._image_samples.setdefault(key, []).append(value[::stride, ::stride])
        self._tasks_buffer.append(task)

    def clear_episode(self) -> None:
        """Discard the frames of the episode being recorded."""
        for enc in self._encoders.values():
            enc.abort()
        self._reset_buffer()

    def save_episode(self) -> int:
        """Write the current episode into the dataset; returns its episode index."""
        length = self.episode_buffer_size
        if length == 0:
            raise RuntimeError("save_episode() called with no frames; add_frame() first")
        self._register_tasks(self._tasks_buffer)
        columns = self._episode_columns(self.num_episodes, self.num_frames, length)
        videos = {}
        for key, encoder in self._encoders.items():
            encoder.close()
            videos[key] = encoder.path
        ep_stats = self._episode_stats(columns, length)
        ep = self._commit(self._table(columns), videos, self._tasks_buffer, ep_stats)
        self._reset_buffer()
        return ep

    def add_encoded_episode(
        self,
        data: pa.Table,
        videos: Mapping[str, str | os.PathLike],
        tasks: Sequence[str],
        camera_stats: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Append an already-encoded episode (used by conversion): data rows plus one mp4 per camera.

        Args:
            data: the episode's rows with every non-video feature (``timestamp`` and ``frame_index`` are
                kept; ``episode_index``, ``index`` and ``task_index`` are renumbered for this dataset).
            videos: ``{video_key: mp4}`` holding exactly this episode's frames (copied, not moved).
            tasks: the task of each frame.
            camera_stats: per-camera statistics (``image_stats`` layout); numeric ones are computed.
        """
        length = data.num_rows
        if len(tasks) != length:
            raise ValueError(f"{len(tasks)} tasks for {length} frames; give one task per frame")
        missing = [k for k in self.video_keys if k not in videos]
        if missing:
            raise ValueError(f"no video given for {missing}")
        self._register_tasks(tasks)
        columns: dict[str, Any] = {}
        for key, spec in self.features.items():
            if spec["dtype"] == "image":
                columns[key] = [v["bytes"] for v in data.column(key).to_pylist()]
            elif spec["dtype"] != "video":
                arr = _flat_values(data.column(key).combine_chunks())
                columns[key] = arr.reshape(length, *spec["shape"]) if tuple(spec["shape"]) != (1,) else arr
        columns[EPISODE_INDEX] = np.full(length, self.num_episodes, dtype=np.int64)
        columns[INDEX] = self.num_frames + np.arange(length, dtype=np.int64)
        columns[TASK_INDEX] = np.array([self.tasks[t] for t in tasks], dtype=np.int64)
        ep_stats = {k: dict(v) for k, v in (camera_stats or {}).items()}
        for key, spec in self.features.items():
            if spec["dtype"] not in ("video", "image"):
                ep_stats[key] = _numeric_stats(np.asarray(columns[key]), spec)
        staged = {}
        for key, src in videos.items():
            staged[key] = self.root / STAGING / f"{key}.mp4"
            staged[key].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staged[key])
        ordered = {k: ep_stats[k] for k in self.features if k in ep_stats}
        return self._commit(self._table(columns), staged, tasks, ordered)

    def _register_tasks(self, tasks: Sequence[str]) -> None:
        for task in tasks:
            if task not in self.tasks:
                self.tasks[task] = len(self.tasks)

    def _commit(
        self,
        table: pa.Table,
        videos: Mapping[str, Path],
        tasks: Sequence[str],
        ep_stats: dict[str, dict[str, np.ndarray]],
    ) -> int:
        """Write data, videos and metadata of one episode; the episodes parquet is the commit point."""
        length, ep, start = table.num_rows, self.num_episodes, self.num_frames
        row: dict[str, Any] = {EPISODE_INDEX: ep, "tasks": list(dict.fromkeys(tasks)), "length": length}
        row.update(self._write_data(table))
        row["dataset_from_index"], row["dataset_to_index"] = start, start + length
        for key in self.video_keys:
            row.update(self._write_video(key, Path(videos[key]), length))
        for key, stats in ep_stats.items():
            for name in STAT_KEYS:
                if name in stats:
                    row[f"stats/{key}/{name}"] = np.asarray(stats[name]).tolist()
        chunk, file = self._episodes_file(row)
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
        self.episode_rows.append(row)
        self.stats = aggregate_stats([self.stats, ep_stats]) if self.stats else ep_stats
        atomic_write_bytes(self.root / TASKS_PATH, _parquet_bytes(_tasks_table(self.tasks)))
        self._write_episodes_file(chunk, file)
        self._write_meta()
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
        return ep

    def finalize(self) -> None:
        """Finish writing: drop an unsaved partial episode and make sure all metadata is written."""
        if self.episode_buffer_size:
            self.clear_episode()
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
        self._write_meta()

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finalize()

    # ------------------------------------------------------------------ writing helpers
    def _episode_columns(self, ep: int, start: int, length: int) -> dict[str, np.ndarray | list]:
        frame_index = np.arange(length, dtype=np.int64)
        columns: dict[str, Any] = {}
        for key, spec in self.features.items():
            if spec["dtype"] == "video":
                continue
            if key in self._frames:
                columns[key] = self._frames[key] if spec["dtype"] == "image" else np.stack(self._frames[key])
        columns[TIMESTAMP] = (frame_index / self.fps).astype(np.float32)
        columns[FRAME_INDEX] = frame_index
        columns[EPISODE_INDEX] = np.full(length, ep, dtype=np.int64)
        columns[INDEX] = start + frame_index
        columns[TASK_INDEX] = np.array([self.tasks[t] for t in self._tasks_buffer], dtype=np.int64)
        return columns

    def _table(self, columns: Mapping[str, Any]) -> pa.Table:
        arrays, names = [], []
        for key, spec in self.features.items():
            if spec["dtype"] == "video":
                continue
            value = columns[key]
            if spec["dtype"] == "image":
                arr = pa.array([{"bytes": b, "path": None} for b in value], _arrow_type(spec))
            elif tuple(spec["shape"]) == (1,):
                arr = pa.array(np.asarray(value).reshape(-1), _arrow_type(spec))
            elif len(spec["shape"]) == 2:
                rows, cols = spec["shape"]
                flat = pa.array(np.asarray(value).reshape(-1), pa.from_numpy_dtype(np.dtype(spec["dtype"])))
                offsets = pa.array(np.arange(len(value) * rows + 1) * cols, pa.int32())  # one per row
                inner = pa.ListArray.from_arrays(offsets, flat)
                arr = pa.ListArray.from_arrays(pa.array(np.arange(len(value) + 1) * rows, pa.int32()), inner)
            else:
                flat = np.asarray(value).reshape(len(value), -1)
                arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
            arrays.append(arr)
            names.append(key)
        table = pa.Table.from_arrays(arrays, names=names)
        return table.replace_schema_metadata({"huggingface": json.dumps(_hf_features(self.features))})

    def _roll(self, prefix: str, path_of, limit_mb: float) -> tuple[int, int, bool]:
        """``(chunk, file, exists)`` for the next episode: the last file, or the next one if it is full."""
        if not self.episode_rows:
            return 0, 0, False
        last = self.episode_rows[-1]
        chunk, file = last[f"{prefix}/chunk_index"], last[f"{prefix}/file_index"]
        path = path_of(chunk, file)
        if path.is_file() and path.stat().st_size < limit_mb * 1024 * 1024:
            return chunk, file, True
        chunk, file = _next_file(chunk, file, self.info["chunks_size"])
        return chunk, file, False

    def _write_data(self, table: pa.Table) -> dict[str, int]:
        def path_of(c: int, f: int) -> Path:
            source = f"{self.root / INFO_PATH} data_path"
            return format_path(
                self.root, self.info["data_path"], source, strict=True, chunk_index=c, file_index=f
            )

        chunk, file, exists = self._roll("data", path_of, self.info["data_files_size_in_mb"])
        if exists:
            table = pa.concat_tables([read_parquet(path_of(chunk, file)), table])
        atomic_write_bytes(path_of(chunk, file), _parquet_bytes(table))
        return {"data/chunk_index": chunk, "data/file_index": file}

    def _write_video(self, key: str, staged: Path, length: int) -> dict[str, Any]:
        def path_of(c: int, f: int) -> Path:
            source = f"{self.root / INFO_PATH} video_path"
            fields = {"video_key": key, "chunk_index": c, "file_index": f}
            return format_path(self.root, self.info["video_path"], source, strict=True, **fields)

        prefix = f"videos/{key}"
        chunk, file, exists = self._roll(prefix, path_of, self.info["video_files_size_in_mb"])
        target = path_of(chunk, file)
        target.parent.mkdir(parents=True, exist_ok=True)
        start = float(self.episode_rows[-1][f"{prefix}/to_timestamp"]) if exists else 0.0
        if exists:
            tmp = target.with_name(f".{target.name}.tmp.mp4")
            concat_videos([(target, 0.0), (staged, start)], tmp)
            os.replace(tmp, target)
        else:
            os.replace(staged, target)
        return {
            f"{prefix}/chunk_index": chunk,
            f"{prefix}/file_index": file,
            f"{prefix}/from_timestamp": start,
            f"{prefix}/to_timestamp": start + length / self.fps,
        }

    def _episode_stats(self, columns: Mapping[str, Any], length: int) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for key, spec in self.features.items():
            if spec["dtype"] in ("video", "image"):
                out[key] = image_stats(np.stack(self._image_samples[key]), count=length)
            else:
                out[key] = _numeric_stats(np.asarray(columns[key]), spec)
        return out

    def _episodes_file(self, row: Mapping[str, Any]) -> tuple[int, int]:
        if not self.episode_rows:
            return 0, 0
        last = self.episode_rows[-1]
        chunk, file = last["meta/episodes/chunk_index"], last["meta/episodes/file_index"]
        path = self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        if path.is_file() and path.stat().st_size >= self.info["data_files_size_in_mb"] * 1024 * 1024:
            return _next_file(chunk, file, self.info["chunks_size"])
        return chunk, file

    def _write_episodes_file(self, chunk: int, file: int) -> None:
        rows = [
            r
            for r in self.episode_rows
            if (r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]) == (chunk, file)
        ]
        table = pa.Table.from_pylist(rows)
        path = self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        atomic_write_bytes(path, _parquet_bytes(table))

    def _write_info(self) -> None:
        info = dict(self.info)
        info["total_episodes"] = self.num_episodes
        info["total_frames"] = self.num_frames
        info["total_tasks"] = len(self.tasks)
        info["splits"] = {"train": f"0:{self.num_episodes}"} if self.num_episodes else {}
        self.info = info
        atomic_write_text(self.root / INFO_PATH, json.dumps(info, indent=4))

    def _write_meta(self) -> None:
        if self.stats:
            atomic_write_text(self.root / STATS_PATH, json.dumps(stats_to_json(self.stats), indent=4))
        if self.tasks:
            atomic_write_bytes(self.root / TASKS_PATH, _parquet_bytes(_tasks_table(self.tasks)))
        self._write_info()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


__all__ = ["DEFAULT_FEATURES", "LeRobotDatasetWriter"]
