"""``fastvla dataset info --verify``: open every data and video file of a dataset and check it end to end.

Beyond what the reader checks at open (``fastvla.datasets.validation``), verification decodes every video
frame and every embedded image, and compares them and the data files with the episodes metadata: frame
counts, frame times, image sizes, leftovers of an interrupted recording, and ``meta/info.json`` totals.

Example:
    >>> report = verify("data/pick")  # doctest: +SKIP
    >>> report.ok, report.problems  # doctest: +SKIP
    (True, [])
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.datasets.metadata import INFO_PATH, DatasetFormatError, read_parquet
from fastvla.datasets.video import VideoDecodeError, frame_times, video_info

REPAIR_HINT = "run `fastvla dataset repair {root}` to trim it and rewrite the totals"


@dataclass
class VerifyReport:
    """What :func:`verify` checked and the problems it found (each message names the file)."""

    root: Path
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str | os.PathLike, tolerance_s: float = 1e-4) -> VerifyReport:
    """Check a local dataset end to end; never raises for a corrupt dataset, it reports.

    Args:
        root: dataset folder.
        tolerance_s: largest allowed gap between a frame's expected time and the decoded frame.
    """
    from fastvla.datasets.lerobot_dataset import LeRobotDataset

    report = VerifyReport(Path(root))
    try:
        dataset = LeRobotDataset(root, tolerance_s=tolerance_s, video_backend="pyav")
    except (DatasetFormatError, VideoDecodeError) as err:
        report.problems.append(str(err))
        return report
    report.checked.update(episodes=dataset.num_episodes, frames=len(dataset))
    for check in (_check_totals, _check_leftovers, _check_data_files, _check_videos, _check_images):
        try:
            check(dataset, report, tolerance_s)
        except (DatasetFormatError, VideoDecodeError) as err:
            report.problems.append(str(err))
    return report


def _check_totals(dataset: Any, report: VerifyReport, tolerance_s: float) -> None:
    meta = dataset.meta
    actual = {"total_episodes": meta.total_episodes, "total_frames": meta.total_frames}
    actual["total_tasks"] = len(meta.tasks)
    for key, value in actual.items():
        if key in meta.info and meta.info[key] != value:
            report.problems.append(
                f"{meta.root / INFO_PATH}: {key}={meta.info[key]} but the episodes metadata holds {value} "
                f"(an interrupted recording?); " + REPAIR_HINT.format(root=meta.root)
            )


def _check_leftovers(dataset: Any, report: VerifyReport, tolerance_s: float) -> None:
    root = dataset.meta.root
    staging = root / ".staging"
    temporaries = [p for p in root.rglob(".*") if p.is_file() and ".tmp" in p.name]
    for path in ([staging] if staging.exists() else []) + temporaries:
        report.problems.append(
            f"{path} is a leftover of an interrupted write; " + REPAIR_HINT.format(root=root)
        )


def _check_data_files(dataset: Any, report: VerifyReport, tolerance_s: float) -> None:
    meta = dataset.meta
    rows: dict[Path, int] = defaultdict(int)
    for ep in meta.episodes:
        rows[meta.file(ep["data/path"])] += ep["length"]
    for path, expected in rows.items():
        have = read_parquet(path).num_rows
        if have != expected:
            report.problems.append(
                f"{path} has {have} rows but its saved episodes have {expected} (rows of an unsaved "
                "episode?); " + REPAIR_HINT.format(root=meta.root)
            )
    report.checked["data files"] = len(rows)


def _check_videos(dataset: Any, report: VerifyReport, tolerance_s: float) -> None:
    meta = dataset.meta
    fps = meta.fps
    decoded = 0
    for key in meta.video_keys:
        by_file: dict[Path, list[dict[str, Any]]] = defaultdict(list)
        for ep in meta.episodes:
            by_file[meta.file(ep[f"videos/{key}/path"])].append(ep)
        height, width = meta.features[key]["shape"][:2]
        for path, episodes in by_file.items():
            try:
                info = video_info(path)
                times = frame_times(path)
            except VideoDecodeError as err:
                report.problems.append(str(err))
                continue
            decoded += len(times)
            if (info["height"], info["width"]) != (height, width):
                report.problems.append(
                    f"{path} holds {info['height']}x{info['width']} frames but meta/info.json declares "
                    f"{key} as {height}x{width}"
                )
            report.problems.extend(_frame_problems(path, key, episodes, times, fps, tolerance_s, meta.root))
        report.checked[f"{key} files"] = len(by_file)
    report.checked["video frames decoded"] = decoded


def _frame_problems(
    path: Path,
    key: str,
    episodes: list[dict[str, Any]],
    times: np.ndarray,
    fps: int,
    tolerance_s: float,
    root: Path,
) -> list[str]:
    problems = []
    if len(times) == 0:
        return [f"{path} decodes to no frames; the file is truncated or corrupt"]
    wanted_end = 0.0
    for ep in episodes:
        start = float(ep[f"videos/{key}/from_timestamp"])
        wanted = start + np.arange(ep["length"]) / fps  # (length,)
        gaps = np.abs(times[np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)] - wanted)
        if (gaps > tolerance_s).any():
            bad = int(np.argmax(gaps > tolerance_s))
            problems.append(
                f"{path}: episode {ep['episode_index']} frame {bad} (t={wanted[bad]:.4f}s) is not in the "
                f"video ({len(times)} frames, {times[0]:.4f}..{times[-1]:.4f}s); the file is truncated or "
                "its timestamps disagree with the metadata"
            )
        wanted_end = max(wanted_end, float(ep[f"videos/{key}/to_timestamp"]))
    extra = int((times > wanted_end - 0.5 / fps).sum())
    if extra:
        problems.append(
            f"{path} has {extra} frames after the last saved episode (an unsaved recording?); "
            + REPAIR_HINT.format(root=root)
        )
    return problems


def _check_images(dataset: Any, report: VerifyReport, tolerance_s: float) -> None:
    from fastvla.datasets.lerobot_dataset import _decode_png

    meta = dataset.meta
    for key in meta.image_keys:
        shape = tuple(meta.features[key]["shape"])
        for position, value in enumerate(dataset.columns[key]):
            where = dataset._describe_position(position)
            image = _decode_png(value, f"{where} {key}")
            if image.shape != shape:
                report.problems.append(f"{where}: {key} image is {image.shape}, meta/info.json says {shape}")
                break
        report.checked[f"{key} images decoded"] = len(dataset.columns[key])


def format_report(report: VerifyReport) -> str:
    """The plain-text report ``fastvla dataset info --verify`` prints."""
    checked = ", ".join(f"{v} {k}" for k, v in report.checked.items())
    lines = [f"verified {report.root}: {checked or 'metadata only'}"]
    if report.ok:
        lines.append("OK: every data and video file matches the metadata")
    else:
        lines.append(f"{len(report.problems)} problem(s):")
        lines.extend(f"  - {p}" for p in report.problems)
    return "\n".join(lines)
