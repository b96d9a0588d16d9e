"""Bringing a v3.0 dataset back to its last complete episode after an interrupted recording.

The writer commits an episode by rewriting ``meta/episodes/...parquet`` last, so the episodes metadata
always describes complete data. An interruption can leave, beyond it: a staging folder, temporary files,
rows of the unsaved episode at the end of a data file, frames at the end of a video file, or a new file
nobody references. :func:`recover` removes exactly those, and :func:`repair` (``fastvla dataset repair``)
runs it without appending, so that ``meta/info.json`` totals match the saved episodes again.

Every file it touches is formatted from the ``info.json`` templates and checked by
:func:`~fastvla.datasets.validation.inside_root` (symlinks resolved) first, and only files matching a
template are candidates for deletion: a corrupted template can never make recovery delete the real data.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastvla.datasets.metadata import (
    DEFAULT_DATA_PATH,
    DEFAULT_VIDEO_PATH,
    EPISODES_DIR,
    INFO_PATH,
    TASKS_PATH,
    feature_keys,
    load_info,
    load_tasks_v30,
    read_parquet,
)
from fastvla.datasets.stats import Stats, aggregate_stats
from fastvla.datasets.validation import format_path, inside_root, validate_episodes
from fastvla.utils.io import atomic_write_bytes

STAGING = ".staging"


@dataclass
class RecoveredState:
    """What the writer needs to continue appending."""

    tasks: dict[str, int]
    episode_rows: list[dict[str, Any]]
    stats: Stats
    actions: list[str] = field(default_factory=list)  # what was trimmed or removed, for the report


def _episode_rows(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sources: dict[int, Path] = {}
    for f in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        for row in read_parquet(f).to_pylist():
            sources[id(row)] = f
            rows.append(row)
    validate_episodes(rows, info, sources)
    return sorted(rows, key=lambda r: r["episode_index"])


def _template_glob(template: str) -> str:
    """``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`` -> ``data/chunk-*/file-*.parquet``."""
    return re.sub(r"\{[^{}]*\}", "*", template)


def _candidates(root: Path, template: str, source: str, **fixed: str) -> list[Path]:
    """Existing files matching a path template (fields fixed where given), each checked to be inside."""
    pattern = template
    for name, value in fixed.items():
        pattern = pattern.replace("{" + name + "}", value)
    found = sorted(p for p in root.glob(_template_glob(pattern)) if p.is_file())
    return [inside_root(root, p.relative_to(root).as_posix(), source, strict=True) for p in found]


def _stats_of(row: dict[str, Any]) -> Stats:
    stats: Stats = {}
    for col, value in row.items():
        if col.startswith("stats/") and value is not None:  # None: stat absent for this episode
            key, stat = col[len("stats/") :].rsplit("/", 1)
            stats.setdefault(key, {})[stat] = np.asarray(value)
    return stats


def _remove_temporaries(root: Path, actions: list[str]) -> None:
    if (root / STAGING).exists():
        shutil.rmtree(root / STAGING, ignore_errors=True)
        actions.append(f"removed the staging folder {root / STAGING}")
    for path in root.rglob(".*"):
        if path.is_file() and ".tmp" in path.name:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                actions.append(f"removed the temporary file {path}")


def _referenced_files(
    root: Path,
    template: str,
    source: str,
    rows: list[dict[str, Any]],
    prefix: str,
    actions: list[str],
    **fixed: str,
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Remove the files matching ``template`` no saved episode references; yield each other one with
    the episode rows that reference it (through their ``{prefix}chunk_index``/``file_index`` columns)."""
    referenced: dict[Path, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        chunk, file = r[f"{prefix}chunk_index"], r[f"{prefix}file_index"]
        path = format_path(root, template, source, strict=True, chunk_index=chunk, file_index=file, **fixed)
        referenced[path].append(r)
    for path in _candidates(root, template, source, **fixed):
        if path in referenced:
            yield path, referenced[path]
        else:
            path.unlink()
            actions.append(f"removed {path} (no saved episode references it)")


def _trim_data(root: Path, info: dict[str, Any], rows: list[dict[str, Any]], actions: list[str]) -> None:
    template = info.get("data_path") or DEFAULT_DATA_PATH
    source = f"{root / INFO_PATH} data_path"
    for path, refs in _referenced_files(root, template, source, rows, "data/", actions):
        keep = sorted(r["episode_index"] for r in refs)
        table = read_parquet(path)
        mask = pc.is_in(table.column("episode_index"), value_set=pa.array(keep, pa.int64()))
        if pc.all(mask).as_py():
            continue
        kept = table.filter(mask)
        buf = io.BytesIO()
        pq.write_table(kept, buf)
        atomic_write_bytes(path, buf.getvalue())
        actions.append(f"dropped {table.num_rows - kept.num_rows} uncommitted rows from {path}")


def _trim_videos(root: Path, info: dict[str, Any], rows: list[dict[str, Any]], actions: list[str]) -> None:
    from fastvla.datasets.video import truncate_video, video_info

    fps = info["fps"]
    template = info.get("video_path") or DEFAULT_VIDEO_PATH
    source = f"{root / INFO_PATH} video_path"
    for key in feature_keys(info, "video"):
        prefix = f"videos/{key}/"
        for path, refs in _referenced_files(root, template, source, rows, prefix, actions, video_key=key):
            end = max(float(r[f"{prefix}to_timestamp"]) for r in refs)
            expected = round(end * fps)
            try:
                frames = video_info(path)["frames"]
            except Exception:
                frames = -1
            if frames != expected:
                tmp = path.with_name(f".{path.name}.tmp.mp4")
                truncate_video(path, end - 0.5 / fps, tmp)
                os.replace(tmp, path)
                actions.append(f"trimmed {path} from {frames} to {expected} frames")


def recover(root: Path, info: dict[str, Any]) -> RecoveredState:
    """Trim leftovers of an interrupted episode and return the dataset's saved state."""
    actions: list[str] = []
    _remove_temporaries(root, actions)
    rows = _episode_rows(root, info) if (root / EPISODES_DIR).is_dir() else []
    tasks = load_tasks_v30(root) if (root / TASKS_PATH).is_file() else {}
    _trim_data(root, info, rows, actions)
    if info.get("video_path"):
        _trim_videos(root, info, rows, actions)
    per_episode = [_stats_of(r) for r in rows]
    stats = aggregate_stats(per_episode) if per_episode else {}
    return RecoveredState(tasks=tasks, episode_rows=rows, stats=stats, actions=actions)


def repair(root: str | os.PathLike) -> list[str]:
    """Bring a v3.0 dataset back to its saved episodes after a crash, without appending.

    Removes staging/temporary files, uncommitted rows and frames and unreferenced files, and rewrites
    ``meta/info.json`` (totals, splits), ``meta/stats.json`` and ``meta/tasks.parquet`` from the episodes
    metadata, the commit point. Returns what was done (also the totals that changed).

    Example:
        >>> repair("data/pick")  # doctest: +SKIP
        ['dropped 6 uncommitted rows from data/pick/data/chunk-000/file-000.parquet', ...]
    """
    from fastvla.datasets.writer import LeRobotDatasetWriter  # deferred: the writer imports this module

    root = Path(root)
    before = load_info(root)
    writer = LeRobotDatasetWriter(root)
    writer.finalize()
    actions = list(writer.recovery_actions)
    for key in ("total_episodes", "total_frames", "total_tasks"):
        if before.get(key) != writer.info[key]:
            actions.append(f"meta/info.json {key}: {before.get(key)} -> {writer.info[key]}")
    return actions
