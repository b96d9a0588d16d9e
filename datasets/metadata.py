"""Reading a LeRobot dataset's metadata (``meta/``) for codebase versions v3.0 and v2.1.

Both versions are normalised into the same in-memory view: ``info`` (the raw ``info.json``), ``features``,
``tasks`` (``{task: task_index}``), ``episodes`` (one dict per episode with v3.0's column names; for v2.1
the file locations are filled in from the path templates) and ``stats``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastvla.datasets.stats import Stats, aggregate_stats, stats_from_json
from fastvla.datasets.validation import (
    SUPPORTED_VERSIONS,
    feature_keys,
    format_path,
    inside_root,
    validate_episodes,
    validate_info,
    validate_tasks,
)

__all__ = [
    "SUPPORTED_VERSIONS",
    "DatasetFormatError",
    "DatasetMeta",
    "InfoFeatures",
    "feature_keys",
    "inside_root",
    "read_parquet",
]
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


class DatasetFormatError(ValueError):
    """The folder is not a readable LeRobot dataset; the message names the problem and the fix."""


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """``pyarrow.parquet.read_table`` with an error that names the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"parquet file {path} is missing; re-download or re-write the dataset")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DatasetFormatError(
            f"parquet file {path} is unreadable ({err}); it is truncated or corrupt. Re-download the "
            "dataset, or for a dataset you recorded, reopen it with LeRobotDatasetWriter to repair it."
        ) from err


def load_info(root: Path) -> dict[str, Any]:
    """Read and check ``meta/info.json``."""
    path = root / INFO_PATH
    if not path.is_file():
        hint = (
            f"{root} does not exist"
            if not root.exists()
            else f"found {sorted(p.name for p in root.iterdir())[:10]}"
        )
        raise DatasetFormatError(
            f"{path} not found: {root} is not a LeRobot dataset root ({hint}). Point to the folder that "
            "contains meta/, data/ and videos/, or pass a Hugging Face repo id."
        )
    return validate_info(read_json(path), path)


def read_json(path: Path) -> Any:
    """Parse a JSON file; an unreadable, non-UTF-8 or truncated file raises an error naming it."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{path} is not UTF-8 text ({err}); restore it from the source") from err
    except (json.JSONDecodeError, RecursionError) as err:
        raise DatasetFormatError(
            f"{path} is not valid JSON ({err}); it is truncated or corrupt. Restore it from the source"
        ) from err
    except OSError as err:
        raise DatasetFormatError(f"{path} cannot be read ({err})") from err


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing; a v2.1 dataset needs it. Re-download the dataset.")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{path} is not UTF-8 text ({err}); restore it from the source") from err
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{path} line {number} is not valid JSON ({err}); truncated?") from err
        if not isinstance(row, dict):
            raise DatasetFormatError(f"{path} line {number} is a {type(row).__name__}, not a JSON object")
        rows.append(row)
    return rows


def _sorted_episodes(rows: list[dict[str, Any]], sources: dict[int, Path], info: dict[str, Any]) -> list:
    validate_episodes(rows, info, sources)
    return sorted(rows, key=lambda r: r["episode_index"])


def load_episodes_v30(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    """All rows of ``meta/episodes/chunk-*/file-*.parquet``, validated, sorted by episode index."""
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetFormatError(
            f"no episode metadata under {root / EPISODES_DIR}; the dataset is incomplete. Re-download it."
        )
    rows: list[dict[str, Any]] = []
    sources: dict[int, Path] = {}
    for f in files:
        table = read_parquet(f)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        for row in _pylist(table.select(keep), f):
            sources[id(row)] = f
            rows.append(row)
    return _sorted_episodes(rows, sources, info)


def _pylist(table: pa.Table, path: Path) -> list[dict[str, Any]]:
    try:
        return table.to_pylist()
    except (pa.ArrowException, ValueError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"parquet file {path} holds values that cannot be read ({err})") from err


def load_episode_stats_v30(root: Path) -> dict[int, Stats]:
    """Per-episode statistics from the ``stats/<key>/<stat>`` columns of the episodes parquet."""
    out: dict[int, Stats] = {}
    for f in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        table = read_parquet(f)
        cols = [c for c in table.column_names if c.startswith("stats/")]
        for row in _pylist(table.select(["episode_index", *cols]), f):
            stats: Stats = {}
            for col in cols:
                if row[col] is None:  # a stat some episodes lack (e.g. quantiles of converted ones)
                    continue
                key, stat = col[len("stats/") :].rsplit("/", 1)
                stats.setdefault(key, {})[stat] = np.asarray(row[col])
            out[row["episode_index"]] = stats
    return out


def load_tasks_v30(root: Path) -> dict[str, int]:
    """``{task: task_index}`` from ``meta/tasks.parquet`` (tasks UTF-8 strings, indices unique)."""
    path = root / TASKS_PATH
    table = read_parquet(path)
    missing = [c for c in ("task", "task_index") if c not in table.column_names]
    if missing:
        raise DatasetFormatError(f"{path} lacks the columns {missing}; restore it from the source dataset")
    return validate_tasks(_pylist(table.select(["task", "task_index"]), path), path)


def _v21_episodes(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    path = root / "meta/episodes.jsonl"
    rows = _jsonl(path)
    rows = _sorted_episodes(rows, {id(r): path for r in rows}, info)
    chunks = int(info.get("chunks_size", 1000))
    video_keys = feature_keys(info, "video")
    start = 0
    for row in rows:
        ep, length = row["episode_index"], row["length"]
        row["dataset_from_index"], row["dataset_to_index"] = start, start + length
        start += length
        chunk = ep // chunks
        row["data/path"] = _relative(
            root, info["data_path"], "data_path", episode_chunk=chunk, episode_index=ep
        )
        for key in video_keys:
            row[f"videos/{key}/path"] = _relative(
                root, info["video_path"], "video_path", episode_chunk=chunk, episode_index=ep, video_key=key
            )
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = length / info["fps"]
    return rows


def _relative(root: Path, template: str, name: str, **fields: Any) -> str:
    """A formatted path template, checked to stay inside ``root``, relative to it."""
    path = format_path(root, template, f"{root / INFO_PATH} {name}", **fields)
    return path.relative_to(root).as_posix()


def _v30_paths(root: Path, info: dict[str, Any], episodes: list[dict[str, Any]]) -> None:
    video_keys = feature_keys(info, "video")
    data_path = info.get("data_path") or DEFAULT_DATA_PATH
    video_path = info.get("video_path") or DEFAULT_VIDEO_PATH
    for row in episodes:
        chunk, file = row["data/chunk_index"], row["data/file_index"]
        row["data/path"] = _relative(root, data_path, "data_path", chunk_index=chunk, file_index=file)
        for key in video_keys:
            row[f"videos/{key}/path"] = _relative(
                root,
                video_path,
                "video_path",
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )


class InfoFeatures:
    """What ``meta/info.json`` (``self.info``) says about frames and features, for the reader's
    :class:`DatasetMeta` and the writer alike. The key names are lerobot's ``LeRobotDatasetMetadata``'s."""

    info: dict[str, Any]

    @property
    def fps(self) -> int:
        """Frames per second."""
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """Feature specs by key (``dtype``, ``shape``, ``names``)."""
        return self.info["features"]

    @property
    def video_keys(self) -> list[str]:
        """Camera features stored as mp4."""
        return feature_keys(self.info, "video")

    @property
    def image_keys(self) -> list[str]:
        """Camera features stored as PNG bytes inside the parquet files."""
        return feature_keys(self.info, "image")

    @property
    def camera_keys(self) -> list[str]:
        """Video and image feature keys, in ``info.json`` order."""
        return feature_keys(self.info, "video", "image")


class DatasetMeta(InfoFeatures):
    """Metadata of a LeRobot dataset on disk (v3.0 or v2.1).

    Attributes:
        root: dataset folder.
        info: the parsed ``meta/info.json``.
        version: ``"v3.0"`` or ``"v2.1"``.
        fps: frames per second.
        features: feature specs (``dtype``, ``shape``, ``names``).
        camera_keys: video and image feature keys, in ``info.json`` order.
        video_keys: features stored as mp4.
        image_keys: features stored as PNG bytes inside the parquet files.
        tasks: ``{task: task_index}``.
        episodes: one dict per episode (v3.0 column names, plus ``data/path`` and ``videos/<key>/path``).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.info = load_info(self.root)
        self.version: str = self.info["codebase_version"]
        if self.version == "v3.0" and self._is_empty():
            self.tasks, self.episodes = {}, []
        elif self.version == "v3.0":
            self.tasks = load_tasks_v30(self.root)
            self.episodes = load_episodes_v30(self.root, self.info)
            _v30_paths(self.root, self.info, self.episodes)
        else:
            tasks_path = self.root / "meta/tasks.jsonl"
            self.tasks = validate_tasks(_jsonl(tasks_path), tasks_path)
            self.episodes = _v21_episodes(self.root, self.info)
        self._stats: Stats | None = None

    def _is_empty(self) -> bool:
        """A freshly created dataset (or one whose first recording was interrupted) has no episodes."""
        has_files = any((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        return not has_files and int(self.info.get("total_episodes", 0)) == 0

    def file(self, relative: str) -> Path:
        """The absolute path of a file named in the metadata (``ep["data/path"]``), checked to stay inside."""
        return inside_root(self.root, relative, f"{self.root / INFO_PATH} path template")

    @property
    def total_episodes(self) -> int:
        return len(self.episodes)

    @property
    def total_frames(self) -> int:
        return int(sum(ep["length"] for ep in self.episodes))

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def task_names(self) -> dict[int, str]:
        """``{task_index: task}``."""
        return {i: t for t, i in self.tasks.items()}

    def episode_stats(self) -> dict[int, Stats]:
        """Per-episode statistics (v3.0 episodes parquet, or v2.1 ``episodes_stats.jsonl``)."""
        if self.version == "v3.0":
            return load_episode_stats_v30(self.root)
        path = self.root / "meta/episodes_stats.jsonl"
        if not path.is_file():
            return {}
        return {r.get("episode_index"): _checked_stats(r.get("stats"), path) for r in _jsonl(path)}

    @property
    def stats(self) -> Stats:
        """Dataset statistics: ``meta/stats.json`` (v3.0), or aggregated from per-episode stats (v2.1).

        Empty when the dataset has neither; :class:`LeRobotDataset` then computes numeric statistics.
        """
        if self._stats is None:
            path = self.root / STATS_PATH
            if self.version == "v3.0" and path.is_file():
                self._stats = _checked_stats(read_json(path), path)
            else:
                per_episode = self.episode_stats()
                self._stats = aggregate_stats(list(per_episode.values())) if per_episode else {}
        return self._stats

    @stats.setter
    def stats(self, value: Stats) -> None:
        self._stats = value


def _checked_stats(data: Any, path: Path) -> Stats:
    """Statistics as arrays: an object of objects of finite numbers (lists), else an error naming the file."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DatasetFormatError(
            f"{path} is not an object of per-feature statistics objects; restore it (or delete it: the "
            "reader then computes statistics from the data)"
        )
    try:
        stats = stats_from_json(data)
        bad = [
            f"{k}/{s}"
            for k, d in stats.items()
            for s, v in d.items()
            if v.dtype.kind not in "iuf" or not np.isfinite(v.astype(np.float64)).all()
        ]
    except (ValueError, TypeError) as err:
        raise DatasetFormatError(f"{path} holds statistics that are not numeric arrays ({err})") from err
    if bad:
        raise DatasetFormatError(
            f"{path}: statistics {bad[:5]} are not finite numbers; normalising with them would give NaN. "
            "Restore the file, or delete it so the reader computes statistics from the data."
        )
    return stats
