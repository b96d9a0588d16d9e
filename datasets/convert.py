"""Converting a LeRobot v2.1 dataset (one parquet and one mp4 per episode) to v3.0.

Videos are stream-copied back to back (never re-encoded), data rows are concatenated, per-episode
statistics move from ``meta/episodes_stats.jsonl`` into the episodes parquet (numeric quantiles, which v2.1
lacks, are computed from the data), and ``meta/stats.json`` is aggregated. The output is built under a
temporary folder and renamed into place, so a failed conversion leaves nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from fastvla.constants import TASK_INDEX
from fastvla.datasets.features import DEFAULT_FEATURES
from fastvla.datasets.metadata import DatasetFormatError, DatasetMeta, read_parquet
from fastvla.datasets.video import CODEC_INFO_NAME, video_info
from fastvla.datasets.writer import LeRobotDatasetWriter
from fastvla.utils.io import atomic_directory


def _codec_of(meta: DatasetMeta) -> str:
    for key in meta.video_keys:
        name = meta.features[key].get("info", {}).get("video.codec")
        if name is None and meta.episodes:
            name = video_info(meta.root / meta.episodes[0][f"videos/{key}/path"])["codec"]
        for codec, info_name in CODEC_INFO_NAME.items():
            if name and info_name in name:
                return codec
        if name and "dav1d" in name:
            return "av1"
    return "h264"


def convert_v21_to_v30(
    src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write a v3.0 copy of the v2.1 dataset at ``src`` into ``dst``.

    Args:
        src: v2.1 dataset root.
        dst: output folder (must not exist unless ``overwrite``).
        overwrite: replace an existing ``dst``.
        progress: show a progress bar.

    Returns:
        ``dst``.
    """
    meta = DatasetMeta(src)
    if meta.version != "v2.1":
        raise DatasetFormatError(f"{src} is a {meta.version} dataset; convert expects v2.1")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; choose a new output folder or pass overwrite=True")
    user_features = {k: v for k, v in meta.features.items() if k not in DEFAULT_FEATURES}
    episode_stats = meta.episode_stats()
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        writer = LeRobotDatasetWriter(
            tmp / "dataset",
            fps=meta.fps,
            features=user_features,
            robot_type=meta.robot_type,
            codec=_codec_of(meta),
            chunks_size=int(meta.info.get("chunks_size", 1000)),
        )
        # Keep the source's video info block (codec, pix_fmt, ...), which describes the copied streams.
        for key in meta.video_keys:
            if "info" in meta.features[key]:
                writer.info["features"][key]["info"] = dict(meta.features[key]["info"])
        names = meta.task_names
        for ep in tqdm(meta.episodes, desc="converting", unit="episode", disable=not progress):
            table = read_parquet(meta.root / ep["data/path"])
            tasks = [names[int(i)] for i in table.column(TASK_INDEX).to_pylist()]
            videos = {key: meta.root / ep[f"videos/{key}/path"] for key in meta.video_keys}
            stats = episode_stats.get(ep["episode_index"], {})
            image_stats = {k: v for k, v in stats.items() if k in meta.camera_keys}
            writer.add_encoded_episode(table, videos, tasks, image_stats)
        writer.finalize()
        inner = tmp / "dataset"
        for child in inner.iterdir():
            child.rename(tmp / child.name)
        inner.rmdir()
    return dst
