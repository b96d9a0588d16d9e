"""Bringing a v3.0 dataset back to its last complete episode after an interrupted recording.

The writer commits an episode by rewriting ``meta/episodes/...parquet`` last, so the episodes metadata
always describes complete data. An interruption can leave, beyond it: a staging folder, temporary files,
rows of the unsaved episode at the end of a data file, frames at the end of a video file, or a new file
nobody references. :func:`recover` removes exactly those.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastvla.datasets.metadata import EPISODES_DIR, TASKS_PATH, load_tasks_v30, read_parquet
from fastvla.datasets.stats import Stats, aggregate_stats
from fastvla.utils.io import atomic_write_bytes

STAGING = ".staging"


@dataclass
class RecoveredState:
    """What the writer needs to continue appending."""

    tasks: dict[str, int]
    episode_rows: list[dict[str, Any]]
    stats: Stats


def _episode_rows(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        rows.extend(read_parquet(f).to_pylist())
    return sorted(rows, key=lambda r: r["episode_index"])


def _stats_of(row: dict[str, Any]) -> Stats:
    stats: Stats = {}
    for col, value in row.items():
        if col.startswith("stats/") and value is not None:  # None: stat absent for this episode
            key, stat = col[len("stats/") :].rsplit("/", 1)
            stats.setdefault(key, {})[stat] = np.asarray(value)
    return stats


def _remove_temporaries(root: Path) -> None:
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for path in root.rglob(".*"):
        if path.is_file() and ".tmp" in path.name:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _trim_data(root: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    referenced: dict[Path, set[int]] = defaultdict(set)
    for r in rows:
        path = root / info["data_path"].format(
            chunk_index=r["data/chunk_index"], file_index=r["data/file_index"]
        )
        referenced[path].add(r["episode_index"])
    for path in sorted((root / "data").glob("chunk-*/*.parquet")):
        keep = referenced.get(path)
        if not keep:
            path.unlink()
            continue
        table = pq.read_table(path)
        mask = pc.is_in(table.column("episode_index"), value_set=pa.array(sorted(keep), pa.int64()))
        if pc.all(mask).as_py():
            continue
        kept = table.filter(mask)
        buf = io.BytesIO()
        pq.write_table(kept, buf)
        atomic_write_bytes(path, buf.getvalue())


def _trim_videos(root: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from fastvla.datasets.video import truncate_video, video_info

    fps = info["fps"]
    for key, spec in info["features"].items():
        if spec["dtype"] != "video":
            continue
        ends: dict[Path, float] = {}
        for r in rows:
            path = root / info["video_path"].format(
                video_key=key,
                chunk_index=r[f"videos/{key}/chunk_index"],
                file_index=r[f"videos/{key}/file_index"],
            )
            ends[path] = max(ends.get(path, 0.0), float(r[f"videos/{key}/to_timestamp"]))
        for path in sorted((root / "videos" / key).glob("chunk-*/*.mp4")):
            if path not in ends:
                path.unlink()
                continue
            expected = round(ends[path] * fps)
            try:
                frames = video_info(path)["frames"]
            except Exception:
                frames = -1
            if frames != expected:
                tmp = path.with_name(f".{path.name}.tmp.mp4")
                truncate_video(path, ends[path] - 0.5 / fps, tmp)
                os.replace(tmp, path)


def recover(root: Path, info: dict[str, Any]) -> RecoveredState:
    """Trim leftovers of an interrupted episode and return the dataset's saved state."""
    _remove_temporaries(root)
    rows = _episode_rows(root) if (root / EPISODES_DIR).is_dir() else []
    tasks = load_tasks_v30(root) if (root / TASKS_PATH).is_file() else {}
    _trim_data(root, info, rows)
    if info.get("video_path"):
        _trim_videos(root, info, rows)
    per_episode = [_stats_of(r) for r in rows]
    stats = aggregate_stats(per_episode) if per_episode else {}
    return RecoveredState(tasks=tasks, episode_rows=rows, stats=stats)
