"""A torch map-style dataset over LeRobot datasets (codebase v3.0 and v2.1), without the lerobot package.

Items are what ``lerobot.datasets.lerobot_dataset.LeRobotDataset.__getitem__`` returns: numeric features as
tensors, camera features as float32 ``(3, H, W)`` in [0, 1], ``task`` as a string, and with
``delta_timestamps`` a window per key plus ``<key>_is_pad`` for frames clamped at the episode boundary.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fastvla.constants import EPISODE_INDEX, TASK, TASK_INDEX, TIMESTAMP
from fastvla.datasets.metadata import DatasetFormatError, DatasetMeta, read_parquet
from fastvla.datasets.stats import numeric_stats
from fastvla.datasets.validation import validate_columns, validate_video_extents
from fastvla.datasets.video import VideoDecodeError, decode_frames

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_root(root_or_repo_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local dataset folder, downloading a Hugging Face dataset repo id when no such folder exists."""
    path = Path(root_or_repo_id).expanduser()
    if path.exists() or not _REPO_ID.match(str(root_or_repo_id)):
        return path
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=str(root_or_repo_id), repo_type="dataset", revision=revision)
    except Exception as err:
        raise DatasetFormatError(
            f"{root_or_repo_id!r} is neither a local folder nor a downloadable Hugging Face dataset ({err}). "
            "Check the path, or the repo id and your network / HF_TOKEN."
        ) from err
    return Path(local)


def _decode_png(value: Any, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    data = value["bytes"] if isinstance(value, Mapping) else value
    if not isinstance(data, bytes):
        raise DatasetFormatError(
            f"{where}: image feature without embedded bytes (path-only images are not supported)"
        )
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetFormatError(
            f"{where}: an embedded image cannot be decoded ({err}); corrupt file"
        ) from err


class LeRobotDataset(torch.utils.data.Dataset):
    """LeRobot dataset reader: a local root or a Hugging Face repo id, v3.0 or v2.1.

    Args:
        root_or_repo_id: dataset folder (containing ``meta/info.json``) or a hub repo id.
        episodes: episode indices to load (default: all). Item ``i`` walks the selected episodes' frames.
        delta_timestamps: ``{key: [seconds, ...]}`` relative frame offsets, e.g. ``{"action": [0, 0.1]}``;
            each offset must be a multiple of ``1/fps``.
        revision: hub revision when downloading.
        tolerance_s: allowed timestamp mismatch when locating video frames (lerobot's default 1e-4).
        allow_nonfinite: accept NaN/inf in float features (by default they raise
            :class:`DatasetFormatError` at open, naming the file, episode and frame).
        video_backend: ``"auto"`` (torchcodec when installed, else PyAV), ``"pyav"`` or ``"torchcodec"``.
        image_transforms: optional callable applied to each float ``(3, H, W)`` camera tensor.

    Example:
        >>> ds = LeRobotDataset("data/pick", delta_timestamps={"action": [0, 0.1, 0.2]})  # doctest: +SKIP
        >>> ds[0]["action"].shape, ds[0]["action_is_pad"]  # doctest: +SKIP
        (torch.Size([3, 7]), tensor([False, False, False]))
    """

    def __init__(
        self,
        root_or_repo_id: str | os.PathLike,
        episodes: Sequence[int] | None = None,
        delta_timestamps: Mapping[str, Sequence[float]] | None = None,
        *,
        revision: str | None = None,
        tolerance_s: float = 1e-4,
        video_backend: str = "auto",
        image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None,
        allow_nonfinite: bool = False,
    ):
        self.root = resolve_root(root_or_repo_id, revision)
        self.meta = DatasetMeta(self.root)
        self.tolerance_s = tolerance_s
        self.allow_nonfinite = allow_nonfinite
        self.video_backend = video_backend
        self.image_transforms = image_transforms
        by_index = {ep["episode_index"]: ep for ep in self.meta.episodes}
        if episodes is None:
            self.episodes = sorted(by_index)
        else:
            missing = sorted(set(episodes) - set(by_index))
            if missing:
                raise ValueError(
                    f"episodes {missing} not in the dataset; it has {len(by_index)} episodes "
                    f"(indices {min(by_index, default=None)}..{max(by_index, default=None)})"
                )
            self.episodes = sorted(set(int(e) for e in episodes))
        self._episode_meta = [by_index[e] for e in self.episodes]
        self._load_data()
        self._check_video_extents()
        self.delta_indices = self._delta_indices(delta_timestamps)
        self.delta_timestamps = dict(delta_timestamps) if delta_timestamps else None
        if not self.meta.stats and len(self):
            self.meta.stats = {
                k: numeric_stats(v) for k, v in self.columns.items() if k in self._numeric_keys
            }

    # ------------------------------------------------------------------ loading
    @property
    def _numeric_keys(self) -> list[str]:
        return [k for k, f in self.meta.features.items() if f["dtype"] not in ("video", "image", "string")]

    def _load_data(self) -> None:
        """Load the selected episodes' parquet rows into column arrays (positions 0..N-1), then validate."""
        wanted = [k for k in self.meta.features if self.meta.features[k]["dtype"] != "video"]
        tables: dict[Path, Any] = {}
        parts: dict[str, list[Any]] = {k: [] for k in wanted}
        starts, lengths = [], []
        position = 0
        for ep in self._episode_meta:
            path = self.meta.file(ep["data/path"])
            try:
                if path not in tables:
                    tables[path] = self._open_table(path, wanted)
                rows = self._episode_rows(tables[path], ep, path)
                sub = tables[path][0].take(rows)
                for key in wanted:
                    col = sub.column(key)
                    if key in self.meta.image_keys:
                        parts[key].extend(col.to_pylist())
                    else:
                        parts[key].append(self._column_array(key, col, path))
            except (pa.ArrowException, KeyError, TypeError, ValueError) as err:
                if isinstance(err, DatasetFormatError):
                    raise
                raise DatasetFormatError(
                    f"{path}: episode {ep['episode_index']} cannot be read ({type(err).__name__}: {err}); "
                    "the data file is corrupt or does not belong to this metadata. Re-download the dataset."
                ) from err
            starts.append(position)
            lengths.append(len(rows))
            position += len(rows)
        self.columns: dict[str, Any] = {}
        for key in wanted:
            if key in self.meta.image_keys:
                self.columns[key] = parts[key]
            else:
                self.columns[key] = np.concatenate(parts[key]) if parts[key] else np.zeros((0,))
        self.episode_starts = np.asarray(starts, dtype=np.int64)
        self.episode_lengths = np.asarray(lengths, dtype=np.int64)
        # For each position: which selected episode (0..len(episodes)-1) it belongs to.
        self.position_episode = np.repeat(np.arange(len(starts)), lengths)
        validate_columns(
            self.columns,
            self.episode_lengths,
            self.meta.fps,
            self.meta.task_names,
            self._numeric_keys,
            self._describe_position,
            tolerance_s=self.tolerance_s,
            allow_nonfinite=self.allow_nonfinite,
        )

    def _check_video_extents(self) -> None:
        """v3.0 only: v2.1 time ranges are derived from the lengths (one file per episode), not stored."""
        if self.meta.version != "v3.0":
            return
        ends: dict[Path, tuple[float, int]] = {}
        for ep in self._episode_meta:
            for key in self.meta.video_keys:
                path = self.meta.file(ep[f"videos/{key}/path"])
                end = float(ep[f"videos/{key}/to_timestamp"])
                if end > ends.get(path, (-1.0, 0))[0]:
                    ends[path] = (end, ep["episode_index"])
        validate_video_extents(ends, self.meta.fps)

    def _open_table(self, path: Path, wanted: list[str]) -> tuple[Any, np.ndarray, np.ndarray]:
        table = read_parquet(path)
        absent = [k for k in wanted if k not in table.column_names]
        if absent:
            raise DatasetFormatError(
                f"{path} lacks columns {absent} that meta/info.json declares; the data file does not "
                "belong to this metadata. Re-download or re-write the dataset."
            )
        ep_col = table.column(EPISODE_INDEX).to_numpy()
        order = np.argsort(ep_col, kind="stable")  # rows grouped by episode, file order kept
        return table, ep_col[order], order

    @staticmethod
    def _episode_rows(opened: tuple[Any, np.ndarray, np.ndarray], ep: dict, path: Path) -> np.ndarray:
        _, sorted_eps, order = opened
        lo = np.searchsorted(sorted_eps, ep["episode_index"], side="left")
        hi = np.searchsorted(sorted_eps, ep["episode_index"], side="right")
        rows = order[lo:hi]
        if len(rows) != ep["length"]:
            raise DatasetFormatError(
                f"episode {ep['episode_index']} has {len(rows)} rows in {path} but the metadata says "
                f"length {ep['length']}; the dataset is inconsistent (interrupted copy?). Re-download it."
            )
        return rows

    def _describe_position(self, position: int) -> str:
        slot = int(self.position_episode[position])
        ep = self._episode_meta[slot]
        frame = position - int(self.episode_starts[slot])
        return f"{self.meta.file(ep['data/path'])}: episode {ep['episode_index']} frame {frame}"

    def _column_array(self, key: str, col: Any, path: Path) -> np.ndarray:
        shape = tuple(self.meta.features[key]["shape"])
        values = col.combine_chunks() if hasattr(col, "combine_chunks") else col
        if values.null_count:
            raise DatasetFormatError(f"{path}: feature {key!r} has {values.null_count} missing (null) values")
        n = len(values)
        if hasattr(values, "flatten"):  # list column (nested for 2-D features): (N * C,) values
            flat = values
            while hasattr(flat, "flatten"):
                flat = flat.flatten()
            arr = flat.to_numpy(zero_copy_only=False)
        else:
            arr = values.to_numpy(zero_copy_only=False)
            if arr.dtype == object:
                arr = np.stack(arr).reshape(-1)
        if self.meta.features[key]["dtype"] != "string" and arr.dtype.kind not in "biuf":
            raise DatasetFormatError(
                f"{path}: feature {key!r} holds {arr.dtype} values, but meta/info.json declares "
                f"{self.meta.features[key]['dtype']}; the data and metadata disagree"
            )
        per_frame = int(np.prod(shape)) if shape else 1
        if arr.size != n * per_frame:
            raise DatasetFormatError(
                f"feature {key!r} has {arr.size // max(n, 1)} values per frame in {path} but "
                f"meta/info.json declares shape {list(shape)}; the metadata and data disagree. Fix "
                "meta/info.json or re-write the dataset."
            )
        return arr.reshape(n) if shape in ((1,), ()) else arr.reshape(n, *shape)

    def _delta_indices(self, delta_timestamps: Mapping[str, Sequence[float]] | None) -> dict[str, np.ndarray]:
        if not delta_timestamps:
            return {}
        fps = self.meta.fps
        out = {}
        for key, deltas in delta_timestamps.items():
            if key not in self.meta.features:
                raise KeyError(
                    f"delta_timestamps key {key!r} is not a feature; available: {list(self.meta.features)}"
                )
            steps = np.asarray(deltas, dtype=np.float64) * fps
            rounded = np.round(steps)
            if np.abs(steps - rounded).max() > self.tolerance_s * fps + 1e-9:
                raise ValueError(
                    f"delta_timestamps[{key!r}]={list(deltas)} are not multiples of 1/fps = {1 / fps:.4f}s; "
                    "use offsets on the frame grid"
                )
            out[key] = rounded.astype(np.int64)
        return out

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.position_episode)

    @property
    def num_frames(self) -> int:
        """Frames in the selected episodes."""
        return len(self)

    @property
    def num_episodes(self) -> int:
        """Selected episodes."""
        return len(self.episodes)

    @property
    def fps(self) -> int:
        return self.meta.fps

    def episode_range(self, i: int) -> tuple[int, int]:
        """``[start, stop)`` positions of the ``i``-th selected episode."""
        return int(self.episode_starts[i]), int(self.episode_starts[i] + self.episode_lengths[i])

    def task_of(self, position: int) -> str:
        """Task string of the frame at ``position``."""
        return self.meta.task_names[int(self.columns[TASK_INDEX][position])]

    def video_location(self, key: str, episode_slot: int) -> tuple[Path, float]:
        """``(mp4 path, from_timestamp)`` of a video feature for the ``episode_slot``-th selected episode."""
        ep = self._episode_meta[episode_slot]
        return self.meta.file(ep[f"videos/{key}/path"]), float(ep[f"videos/{key}/from_timestamp"])

    def _camera_frames(self, key: str, slot: int, positions: np.ndarray) -> torch.Tensor:
        shape = tuple(self.meta.features[key]["shape"])
        if key in self.meta.image_keys:
            where = f"{self.meta.file(self._episode_meta[slot]['data/path'])} {key}"
            decoded = [_decode_png(self.columns[key][p], where) for p in positions]
            wrong = [d.shape for d in decoded if d.shape != shape]
            if wrong:
                raise DatasetFormatError(
                    f"{where}: embedded image of shape {wrong[0]}, declared {list(shape)}"
                )
            frames = np.stack(decoded)
        else:
            path, start = self.video_location(key, slot)
            times = start + self.columns[TIMESTAMP][positions].astype(np.float64)
            frames = decode_frames(path, times, self.tolerance_s, backend=self.video_backend)
            if frames.shape[1:] != shape:  # one tuple comparison per item: a re-encoded/foreign file
                raise VideoDecodeError(
                    f"{path} holds frames of shape {frames.shape[1:]} but meta/info.json declares {key} as "
                    f"{list(shape)}; the video does not belong to this metadata"
                )
        images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
        if self.image_transforms is not None:
            images = torch.stack([self.image_transforms(img) for img in images])
        return images

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} frames")
        slot = int(self.position_episode[idx])
        start, stop = self.episode_range(slot)
        item: dict[str, Any] = {}
        for key in self.meta.features:
            if key in self.delta_indices:
                query = idx + self.delta_indices[key]
                positions = np.clip(query, start, stop - 1)
                item[f"{key}_is_pad"] = torch.from_numpy((query < start) | (query >= stop))
            else:
                positions = np.array([idx])
            if key in self.meta.camera_keys:
                value = self._camera_frames(key, slot, positions)
            else:
                value = torch.from_numpy(np.ascontiguousarray(self.columns[key][positions]))
            item[key] = value if key in self.delta_indices else value[0]
        item[TASK] = self.task_of(idx)
        return dict(sorted(item.items()))

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(root={str(self.root)!r}, version={self.meta.version}, "
            f"episodes={self.num_episodes}, frames={self.num_frames}, fps={self.fps}, "
            f"cameras={self.meta.camera_keys})"
        )


def split_episodes(
    episodes: int | Sequence[int], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split episode indices into train and validation sets (whole episodes, never frames).

    Args:
        episodes: number of episodes or the list of episode indices.
        val_fraction: share of episodes for validation (at least one when 0 < fraction and >1 episode).
        seed: shuffling seed.

    Returns:
        ``(train, val)`` sorted lists.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    ids = list(range(episodes)) if isinstance(episodes, int) else [int(e) for e in episodes]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(ids) > 1:
        n_val = 1
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val
