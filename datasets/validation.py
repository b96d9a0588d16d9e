"""Checks that a LeRobot dataset's metadata and data are what the reader relies on, done once at open.

Every check raises :class:`~fastvla.datasets.metadata.DatasetFormatError` naming the offending file (and the
field, episode or frame), so a corrupted copy never reads back wrong data silently. The rules are listed in
``docs/datasets.md`` ("Validation"). Checks run on whole columns with numpy, never per frame.

:func:`inside_root` is the one place that turns a path from the metadata into a file path; readers, the
writer and recovery all go through it, so a template like ``../../x/{chunk_index}.parquet`` can never make
FastVLA read, write or delete outside the dataset folder.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.constants import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK_INDEX, TIMESTAMP

SUPPORTED_VERSIONS = ("v3.0", "v2.1")
CAMERA_DTYPES = ("video", "image")
NON_NUMERIC_DTYPES = (*CAMERA_DTYPES, "string")
REQUIRED_FEATURES = (TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX)
# Template fields each version formats its path templates with (sample values for the up-front check).
TEMPLATE_FIELDS = {
    "v3.0": {
        "data_path": ("chunk_index", "file_index"),
        "video_path": ("video_key", "chunk_index", "file_index"),
    },
    "v2.1": {
        "data_path": ("episode_chunk", "episode_index"),
        "video_path": ("video_key", "episode_chunk", "episode_index"),
    },
}


def feature_keys(info: dict[str, Any], *dtypes: str) -> list[str]:
    """Keys of the features of ``info`` (``meta/info.json``) stored as one of ``dtypes``, in file order."""
    return [k for k, f in info["features"].items() if f["dtype"] in dtypes]


def _error(message: str) -> Exception:
    from fastvla.datasets.metadata import DatasetFormatError  # metadata imports this module

    return DatasetFormatError(message)


def is_int(value: Any) -> bool:
    """A JSON/parquet integer (``bool`` excluded; numpy integers included)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A finite int or float (``bool`` excluded)."""
    return (is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(float(value))


# ---------------------------------------------------------------------------------------------- paths
def inside_root(root: Path, relative: Any, source: str, *, strict: bool = False) -> Path:
    """``root / relative``, refusing any path that leaves ``root``.

    Args:
        root: the dataset folder.
        relative: a relative path from the metadata (a formatted template).
        source: where the path came from, for the message (e.g. ``"meta/info.json data_path"``).
        strict: also resolve symlinks (used before writing or deleting). Reads only check the path
            lexically, because the Hugging Face hub cache stores dataset files as symlinks into its
            ``blobs/`` folder, outside the snapshot folder.

    Raises:
        DatasetFormatError: the path is absolute, empty, or climbs out of ``root`` (``..``, a symlink).
    """
    if not isinstance(relative, str) or not relative:
        raise _error(f"{source} gives the path {relative!r}, not a non-empty relative path string")
    rel = Path(relative)
    normal = os.path.normpath(relative)
    if rel.is_absolute() or rel.drive or normal == ".." or normal.startswith(".." + os.sep) or normal == ".":
        raise _error(
            f"{source} resolves to {relative!r}, which is outside the dataset folder {root}; paths in the "
            "metadata must stay inside it. Restore meta/info.json from the source dataset."
        )
    path = root / normal
    if strict:
        real_root = root.resolve()
        target = path.resolve()
        if target != real_root and real_root not in target.parents:
            raise _error(
                f"{source} path {relative!r} leads (through a symlink) to {target}, outside the dataset "
                f"folder {real_root}; refusing to write or delete there"
            )
    return path


def format_path(root: Path, template: str, source: str, *, strict: bool = False, **fields: Any) -> Path:
    """Format a path template from ``info.json`` and return the file path, inside ``root``."""
    try:
        relative = template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as err:
        raise _error(
            f"{source} template {template!r} cannot be formatted with {sorted(fields)} ({err!r}); "
            "restore meta/info.json from the source dataset"
        ) from err
    return inside_root(root, relative, source, strict=strict)


# ---------------------------------------------------------------------------------------------- info.json
def validate_info(info: Any, path: Path) -> dict[str, Any]:
    """Types and ranges of ``meta/info.json``; returns it with ``fps`` as an ``int``.

    Rules: a JSON object; a supported ``codebase_version``; ``fps`` a positive integer (``10.0`` is
    accepted as 10); ``features`` an object whose every entry has a known ``dtype`` and a ``shape`` of
    positive integers ((H, W, 3) for cameras), including the five index features; ``data_path`` (and
    ``video_path`` when there are video features) strings that format to paths inside the dataset; the
    optional counters non-negative integers.
    """
    if not isinstance(info, dict):
        raise _error(f"{path} holds a JSON {type(info).__name__}, not an object; restore it from the source")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise _error(
            f"unsupported LeRobot codebase_version {version!r} in {path}; supported: "
            f"{list(SUPPORTED_VERSIONS)}. Convert older datasets with lerobot's conversion scripts "
            "(v2.0 -> v2.1), then `fastvla dataset convert` for v2.1 -> v3.0."
        )
    for key in ("fps", "features"):
        if key not in info:
            raise _error(f"{path} lacks the required field {key!r}; the file is incomplete")
    fps = info["fps"]
    if isinstance(fps, float) and fps.is_integer():
        fps = int(fps)
    if not is_int(fps) or fps <= 0:
        raise _error(f"{path}: fps={info['fps']!r} must be a positive integer (frames per second)")
    info = {**info, "fps": int(fps)}
    _validate_features(info["features"], path)
    for key in ("total_episodes", "total_frames", "total_tasks"):
        if key in info and (not is_int(info[key]) or info[key] < 0):
            raise _error(f"{path}: {key}={info[key]!r} must be a non-negative integer")
    if "chunks_size" in info and (not is_int(info["chunks_size"]) or info["chunks_size"] <= 0):
        raise _error(f"{path}: chunks_size={info['chunks_size']!r} must be a positive integer")
    _validate_templates(info, path)
    return info


def _validate_features(features: Any, path: Path) -> None:
    if not isinstance(features, dict) or not features:
        raise _error(f"{path}: 'features' must be a non-empty object of feature specs; got {features!r:.80}")
    for key, spec in features.items():
        where = f"{path}: feature {key!r}"
        if not isinstance(spec, dict):
            raise _error(f"{where} is a {type(spec).__name__}, not an object with 'dtype' and 'shape'")
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if not isinstance(dtype, str):
            raise _error(f"{where} has no string 'dtype' (got {dtype!r}); restore meta/info.json")
        if dtype not in NON_NUMERIC_DTYPES:
            try:
                np.dtype(dtype)
            except TypeError:
                raise _error(
                    f"{where} has unknown dtype {dtype!r}; expected a numpy dtype or "
                    f"one of {list(NON_NUMERIC_DTYPES)}"
                ) from None
        if not isinstance(shape, (list, tuple)) or not all(is_int(s) and s > 0 for s in shape):
            raise _error(f"{where} needs a 'shape' list of positive integers; got {shape!r}")
        if dtype in CAMERA_DTYPES and (len(shape) != 3 or shape[2] != 3):
            raise _error(f"{where} is a camera ({dtype}) and needs shape [H, W, 3]; got {list(shape)}")
    missing = [k for k in REQUIRED_FEATURES if k not in features]
    if missing:
        raise _error(f"{path}: features lack the index features {missing} every LeRobot dataset has")


def _validate_templates(info: dict[str, Any], path: Path) -> None:
    fields = TEMPLATE_FIELDS[info["codebase_version"]]
    video_keys = feature_keys(info, "video")
    root = path.parent.parent
    for name in ("data_path", "video_path"):
        template = info.get(name)
        if template is None and (name == "data_path" and info["codebase_version"] == "v2.1"):
            raise _error(f"{path} lacks 'data_path'; a v2.1 dataset needs it")
        if template is None and name == "video_path" and video_keys:
            if info["codebase_version"] == "v2.1":
                raise _error(f"{path} lacks 'video_path' but declares video features {video_keys}")
            continue
        if template is None:
            continue
        if not isinstance(template, str):
            raise _error(f"{path}: {name}={template!r} must be a path template string")
        for key in video_keys or ["video"]:
            sample = {f: (key if f == "video_key" else 0) for f in fields[name]}
            format_path(root, template, f"{path} {name}", **sample)
            if name == "data_path":
                break


# ---------------------------------------------------------------------------------------------- tasks
def validate_tasks(rows: Iterable[Mapping[str, Any]], path: Path) -> dict[str, int]:
    """``{task: task_index}`` from task rows: each task a non-empty str, indices unique integers."""
    tasks: dict[str, int] = {}
    for row in rows:
        task, index = row.get("task"), row.get("task_index")
        if not isinstance(task, str) or not task:
            raise _error(
                f"{path}: task {task!r:.80} (task_index {index!r}) is not a UTF-8 text string; "
                "restore the file from the source dataset"
            )
        if not is_int(index) or index < 0:
            raise _error(f"{path}: task {task!r} has task_index {index!r}; expected a non-negative integer")
        if task in tasks:
            raise _error(f"{path}: task {task!r} appears twice (indices {tasks[task]} and {index})")
        tasks[task] = int(index)
    if len(set(tasks.values())) != len(tasks):
        seen: dict[int, str] = {}
        for task, index in tasks.items():
            if index in seen:
                raise _error(f"{path}: tasks {seen[index]!r} and {task!r} share task_index {index}")
            seen[index] = task
    return tasks


# ---------------------------------------------------------------------------------------------- episodes
def validate_episodes(
    rows: list[dict[str, Any]], info: dict[str, Any], sources: Mapping[int, Path], tolerance_s: float = 1e-4
) -> None:
    """Episode rows: types, unique indices, lengths, file locations, video time ranges.

    ``sources`` maps ``id(row)`` to the metadata file the row came from, for the messages. v2.1 rows carry
    no locations (they come from the path templates), so only v3.0 rows have those checked.
    """
    fps, v30 = info["fps"], info["codebase_version"] == "v3.0"
    # A quarter frame: loose enough for container time-base rounding, tight enough that a one-frame
    # shift (the failure that silently returns every image of an episode one frame off) is caught.
    slack = max(tolerance_s, 0.25 / fps)
    video_keys = feature_keys(info, "video")
    seen: dict[int, Path] = {}
    spans: dict[tuple, list[tuple[float, float, int, Path]]] = {}
    for row in rows:
        src = sources.get(id(row), Path("meta/episodes"))
        ep, length = row.get(EPISODE_INDEX), row.get("length")
        if not is_int(ep) or ep < 0:
            raise _error(f"{src}: episode_index {ep!r} is not a non-negative integer")
        if ep in seen:
            where = src if seen[ep] == src else f"{seen[ep]} and {src}"
            raise _error(f"{where}: episode {ep} is listed twice; the metadata is corrupt. Re-download it.")
        seen[ep] = src
        if not is_int(length) or length <= 0:
            raise _error(f"{src}: episode {ep} has length {length!r}; expected a positive integer")
        if not v30:
            continue
        lo, hi = row.get("dataset_from_index"), row.get("dataset_to_index")
        if not (is_int(lo) and is_int(hi)) or hi - lo != length or lo < 0:
            raise _error(
                f"{src}: episode {ep} spans dataset_from_index={lo!r}..dataset_to_index={hi!r}, "
                f"which does not match its length {length}"
            )
        prefixes = ["data", *(f"videos/{k}" for k in video_keys)]
        for col in (f"{p}/{n}" for p in prefixes for n in ("chunk_index", "file_index")):
            if not is_int(row.get(col)) or row[col] < 0:
                raise _error(f"{src}: episode {ep} has {col}={row.get(col)!r}; expected an integer >= 0")
        for key in video_keys:
            start, end = row.get(f"videos/{key}/from_timestamp"), row.get(f"videos/{key}/to_timestamp")
            if not (is_number(start) and is_number(end)) or start < -slack:
                raise _error(f"{src}: episode {ep} has {key} from/to_timestamp {start!r}/{end!r}")
            if abs((end - start) - length / fps) > slack:
                raise _error(
                    f"{src}: episode {ep} {key} from_timestamp={start:.4f}s to_timestamp={end:.4f}s spans "
                    f"{end - start:.4f}s, but {length} frames at {fps} fps last {length / fps:.4f}s; the "
                    "video locations are corrupt (every frame would be shifted). Re-download the dataset."
                )
            file = (key, row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"])
            spans.setdefault(file, []).append((start, end, ep, src))
    for (key, chunk, file), ranges in spans.items():
        ranges.sort()
        for (s0, e0, ep0, src), (s1, _, ep1, _) in itertools.pairwise(ranges):
            if s1 < e0 - slack:
                raise _error(
                    f"{src}: episodes {ep0} and {ep1} overlap in the {key} video chunk {chunk} file {file} "
                    f"({s0:.4f}..{e0:.4f}s and from {s1:.4f}s); their video timestamps are corrupt"
                )


# ---------------------------------------------------------------------------------------------- data
def validate_columns(
    columns: Mapping[str, np.ndarray],
    lengths: np.ndarray,
    fps: int,
    tasks: Mapping[int, str],
    numeric_keys: Iterable[str],
    locate: Callable[[int], str],
    tolerance_s: float = 1e-4,
    allow_nonfinite: bool = False,
) -> None:
    """The loaded rows of all selected episodes, checked at once (vectorised, not per episode).

    Rules: ``frame_index`` counts 0..length-1 within each episode; ``timestamp`` equals
    ``frame_index / fps`` (within ``tolerance_s`` plus float32 rounding), since video frames are looked up
    by it; every ``task_index`` is defined by the tasks metadata; float features hold no NaN/inf (unless
    ``allow_nonfinite``). ``locate(position)`` describes a row ("episode 3 frame 7 in data/...parquet").
    """
    n = int(lengths.sum())
    if n == 0:
        return
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    expected_index = np.arange(n) - starts  # (N,) 0..length-1 per episode
    frame_index = np.asarray(columns[FRAME_INDEX]).reshape(-1)
    if not np.array_equal(frame_index, expected_index):
        bad = int(np.flatnonzero(frame_index != expected_index)[0])
        raise _error(
            f"{locate(bad)}: frame_index is {frame_index[bad]}, expected {expected_index[bad]}; rows of the "
            "episode are duplicated, missing or out of order"
        )
    stamps = np.asarray(columns[TIMESTAMP], dtype=np.float64).reshape(-1)
    expected = expected_index / fps
    # float32 timestamps lose precision in long episodes: allow a few ulps beyond the tolerance.
    slack = tolerance_s + 4 * np.spacing(np.float32(max(float(expected.max()), 1.0)))
    good = np.abs(stamps - expected) <= slack  # False for NaN too
    if not good.all():
        bad = int(np.argmin(good))
        raise _error(
            f"{locate(bad)}: timestamp is {float(stamps[bad])!r}s, expected {expected[bad]:.4f}s "
            "(frame_index / fps); video frames would be looked up at the wrong time. Restore the data file."
        )
    task_index = np.asarray(columns[TASK_INDEX]).reshape(-1)
    known = np.isin(task_index, np.fromiter(tasks, dtype=np.int64, count=len(tasks)))
    if not known.all():
        bad = int(np.argmin(known))
        raise _error(
            f"{locate(bad)}: task_index {task_index[bad]} is not defined by the tasks metadata (known: "
            f"{sorted(tasks)[:10]}); restore meta/tasks from the source dataset"
        )
    if allow_nonfinite:
        return
    for key in numeric_keys:
        values = np.asarray(columns[key])
        if values.dtype.kind != "f":
            continue
        finite = np.isfinite(values.reshape(n, -1)).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise _error(
                f"{locate(bad)}: feature {key!r} holds NaN or inf; training on it would make the loss NaN. "
                "Fix or drop the episode, or pass allow_nonfinite=True to read it anyway."
            )


def validate_video_extents(ends: Mapping[Path, tuple[float, int]], fps: int) -> None:
    """Each v3.0 video file is long enough for the last episode that points into it (header only).

    ``ends`` maps a video file to ``(latest to_timestamp, its episode)``. Without this, an episode whose
    ``from/to_timestamp`` both moved later by a frame would read shifted images until its last frame.
    Costs one container open per file (v3.0 stores many episodes per file, so there are few).
    """
    from fastvla.datasets.video import video_info

    for path, (end, episode) in ends.items():
        info = video_info(path)
        frames = info["frames"] or 0
        if frames and frames / fps < end - 0.25 / fps:
            from fastvla.datasets.video import VideoDecodeError

            raise VideoDecodeError(
                f"{path} holds {frames} frames ({frames / fps:.4f}s at {fps} fps) but episode {episode} "
                f"ends at {end:.4f}s in it; the file is truncated or the metadata's timestamps are corrupt"
            )
