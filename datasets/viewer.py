"""Looking at a dataset: a text summary, an episode video with its instruction, and a state/action plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.constants import ACTION, OBS_STATE, TIMESTAMP
from fastvla.datasets.lerobot_dataset import LeRobotDataset
from fastvla.datasets.metadata import DatasetMeta


def _dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def summary(root: str | os.PathLike) -> dict[str, Any]:
    """Facts about a dataset for ``fastvla dataset info`` (JSON-serialisable)."""
    meta = DatasetMeta(root)
    lengths = np.array([ep["length"] for ep in meta.episodes]) if meta.episodes else np.zeros(1)
    features = {}
    for key, spec in meta.features.items():
        entry = {"dtype": spec["dtype"], "shape": list(spec["shape"])}
        if spec.get("info", {}).get("video.codec"):
            entry["codec"] = spec["info"]["video.codec"]
        if spec.get("names"):
            entry["names"] = spec["names"]
        features[key] = entry
    stats = {}
    for key in (OBS_STATE, ACTION):
        if key in meta.stats:
            stats[key] = {
                s: np.round(np.asarray(meta.stats[key][s], float), 4).tolist() for s in ("mean", "std")
            }
    return {
        "root": str(meta.root),
        "codebase_version": meta.version,
        "robot_type": meta.robot_type,
        "fps": meta.fps,
        "episodes": meta.total_episodes,
        "frames": meta.total_frames,
        "duration_s": meta.total_frames / meta.fps,
        "episode_length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "max": int(lengths.max()),
        },
        "camera_keys": meta.camera_keys,  # feature keys (observation.images.<camera>)
        "tasks": len(meta.tasks),
        "task_examples": list(meta.tasks)[:5],
        "features": features,
        "stats": stats,
        "size_mb": _dir_size(meta.root) / 2**20,
    }


def _caption(width: int, text: str, height: int = 28) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    bar = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(bar)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    while text and draw.textlength(text, font=font) > width - 8:
        text = text[:-2] + "…"
    draw.text((4, (height - 14) // 2), text, fill=(240, 240, 240), font=font)
    return np.asarray(bar)


def episode_video(
    dataset: LeRobotDataset, out: str | os.PathLike, episode_slot: int = 0, min_height: int = 256
) -> Path:
    """Write an mp4 with the episode's cameras side by side and its instruction underneath.

    Args:
        dataset: the dataset (``episode_slot`` indexes its selected episodes).
        out: output mp4.
        episode_slot: which selected episode.
        min_height: cameras are upscaled (nearest) to at least this height for legibility.
    """
    from fastvla.datasets.video import VideoEncoder

    lo, hi = dataset.episode_range(episode_slot)
    keys = dataset.meta.camera_keys
    if not keys:
        raise ValueError(f"dataset at {dataset.root} has no camera features to show")
    first = dataset[lo]
    scale = max(1, -(-min_height // first[keys[0]].shape[1]))
    encoder = None
    out = Path(out)
    try:
        for pos in range(lo, hi):
            item = dataset[pos] if pos != lo else first
            panels = [(item[c].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for c in keys]
            height = max(p.shape[0] for p in panels)
            panels = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
            row = np.concatenate(panels, axis=1).repeat(scale, 0).repeat(scale, 1)  # (H*s, W_total*s, 3)
            text = f"{item['task']}   t={float(item[TIMESTAMP]):.1f}s"
            frame = np.concatenate([row, _caption(row.shape[1], text)], axis=0)
            frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]  # even size for yuv420p
            if encoder is None:
                encoder = VideoEncoder(out, dataset.fps, frame.shape[0], frame.shape[1], codec="h264")
            encoder.add(frame)
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    encoder.close()
    return out


def episode_plot(dataset: LeRobotDataset, out: str | os.PathLike, episode_slot: int = 0) -> Path:
    """Write a PNG plotting every state and action dimension of an episode over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = dataset.episode_range(episode_slot)
    t = dataset.columns[TIMESTAMP][lo:hi]
    keys = [k for k in (OBS_STATE, ACTION) if k in dataset.columns]
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 3.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        values = np.asarray(dataset.columns[key][lo:hi]).reshape(hi - lo, -1)
        names = dataset.meta.features[key].get("names") or [f"{i}" for i in range(values.shape[1])]
        for i in range(values.shape[1]):
            ax.plot(t, values[:, i], label=str(names[i]) if i < len(names) else str(i))
        ax.set_ylabel(key)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    episode = dataset.episodes[episode_slot]
    fig.suptitle(f"episode {episode}: {dataset.task_of(lo)}")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
