"""Fast training samples: every video decoded once into a memory-mapped uint8 frame cache.

lerobot decodes a short video clip per sample (seek to a keyframe, decode forward), which bounds training
throughput by the CPU (lerobot#1623). :class:`TrainingDataset` instead decodes each video file once,
sequentially, resizing to the training resolution, into ``<cache_dir>/<key>/<camera>.npy`` (uint8
``(N, 3, H, W)``). The cache folder is keyed by the dataset's content, the selected episodes, the cameras
and the resolution, and is built under a temporary name and renamed into place, so an interrupted build
is never used. Later epochs and later runs only read memory-mapped pages.

:class:`LeRobotTrainingData` is what the Trainer reads by default (the training core's
:class:`~fastvla.training.data.TrainingData`): it checks a LeRobot dataset against the training config,
splits its episodes and builds :class:`TrainingDataset` s.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastvla.constants import (
    ACTION,
    ACTION_IS_PAD,
    AUX_GOAL,
    DEPTH_UNITS_PER_METRE,
    OBS_STATE,
    TASK,
    TASK_INDEX,
    TIMESTAMP,
    camera_of,
    depth_key,
    image_key,
)
from fastvla.datasets.augment import Augment, default_augment
from fastvla.datasets.lerobot_dataset import LeRobotDataset, resolve_root
from fastvla.datasets.metadata import DatasetMeta
from fastvla.datasets.recorder import recorded_obs_map
from fastvla.datasets.video import VideoDecodeError, iter_frames
from fastvla.training.config import DataConfig
from fastvla.training.data import DataSpec
from fastvla.training.sampling import split_episodes
from fastvla.utils.image import as_hw
from fastvla.utils.io import atomic_directory

CACHE_FORMAT = 1
#: Frames below which the cache is decoded in this process, and the smallest segment a worker decodes.
SEGMENT_MIN_FRAMES = 4096


def _decode_workers(frames: int) -> int:
    """Processes for decoding ``frames`` frames: one for small caches, else up to 16 (one per core)."""
    if frames < 2 * SEGMENT_MIN_FRAMES:
        return 1
    return max(1, min(16, len(os.sched_getaffinity(0)), frames // SEGMENT_MIN_FRAMES))


def _decode_segment(
    path: Path,
    size: tuple[int, int],
    wanted: list[tuple[float, int]],
    tol: float,
    out: np.ndarray | Path,
) -> int:
    """Decode the frames at the (sorted) times of ``wanted`` from ``path`` into ``out[row]``.

    ``out`` is the cache array, or the path of its ``.npy`` file (opened here in a worker process).

    Raises:
        VideoDecodeError: a wanted time has no frame within ``tol`` or the file ends early.
    """
    if isinstance(out, Path):
        out = np.load(out, mmap_mode="r+")
    times = np.array([t for t, _ in wanted])
    rows = [r for _, r in wanted]
    j = 0
    prev: tuple[float, np.ndarray] | None = None
    for t, frame in iter_frames(path, size, start_s=times[0], end_s=times[-1]):
        while j < len(times) and times[j] <= t + tol:
            # the nearest of the previous and this frame
            use_prev = prev is not None and abs(prev[0] - times[j]) < abs(t - times[j])
            ft, img = prev if use_prev else (t, frame)
            if abs(ft - times[j]) > tol:
                raise VideoDecodeError(
                    f"no frame at t={times[j]:.4f}s in {path} (nearest {ft:.4f}s); the video and "
                    "metadata disagree. Re-download or re-record the dataset."
                )
            out[rows[j]] = img.transpose(2, 0, 1)
            j += 1
        prev = (t, frame)
    if j < len(times):
        raise VideoDecodeError(
            f"{path} ends before t={times[j]:.4f}s ({len(times) - j} frames missing); the file is "
            "truncated. Re-download or re-record the dataset."
        )
    if hasattr(out, "flush"):
        out.flush()
    return len(times)


def default_cache_dir() -> Path:
    """``$FASTVLA_CACHE/frames`` or ``~/.cache/fastvla/frames``."""
    return Path(os.environ.get("FASTVLA_CACHE", Path.home() / ".cache" / "fastvla")) / "frames"


def _camera_keys(dataset: LeRobotDataset, cameras: Sequence[str] | None) -> list[str]:
    available = dataset.meta.camera_keys
    if cameras is None:
        return list(available)
    keys = [c if c in available else image_key(c) for c in cameras]
    missing = [c for c, k in zip(cameras, keys) if k not in available]
    if missing:
        names = [k.rsplit(".", 1)[-1] for k in available]
        raise ValueError(f"cameras {missing} not in the dataset; available: {names}")
    return keys


def cache_key(dataset: LeRobotDataset, cameras: Sequence[str], size: tuple[int, int]) -> str:
    """Hash of what determines the cached frames: dataset content, episodes, cameras, resolution."""
    h = hashlib.sha256()
    h.update((dataset.root / "meta" / "info.json").read_bytes())
    for f in sorted((dataset.root / "meta").rglob("*.parquet")) + sorted(dataset.root.rglob("*.mp4")):
        st = f.stat()
        h.update(f"{f.relative_to(dataset.root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(
        json.dumps(
            [CACHE_FORMAT, str(dataset.root.resolve()), dataset.episodes, list(cameras), size]
        ).encode()
    )
    return h.hexdigest()[:20]


def depth_keys(dataset: LeRobotDataset, camera_keys: Sequence[str]) -> list[str]:
    """``observation.depth.<cam>`` of each camera, checked against the dataset's features.

    Raises:
        ValueError: a camera has no depth feature (names the depth features the dataset has).
    """
    keys = [depth_key(camera_of(k)) for k in camera_keys]
    missing = [k for k in keys if k not in dataset.meta.features]
    if missing:
        have = [k for k in dataset.meta.features if k.startswith("observation.depth.")]
        raise ValueError(
            f"depth requested but the dataset at {dataset.root} lacks {missing} (depth features: {have}); "
            "record with depth (fastvla record --depth) or train without --data.depth"
        )
    return keys


def _depth_mm(values: np.ndarray, dtype: str, size: tuple[int, int]) -> np.ndarray:
    """Depth maps ``(N, h, w)`` (uint16 mm or float metres) as uint16 mm ``(N, 1, H, W)``, nearest resize."""
    h, w = values.shape[1:]
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    values = values[:, rows][:, :, cols]  # (N, H, W)
    if np.dtype(dtype).kind == "f":
        values = np.clip(np.round(np.nan_to_num(values) * DEPTH_UNITS_PER_METRE), 0, np.iinfo(np.uint16).max)
    return values.astype(np.uint16)[:, None]


class TrainingDataset(torch.utils.data.Dataset):
    """Training samples from a LeRobot dataset, with images served from a decoded frame cache.

    Each sample: ``observation.images.<cam>`` uint8 ``(3, H, W)``, ``observation.state`` float32 ``(S,)``,
    ``action`` float32 ``(chunk_size, A)`` (the actions of this and the next frames, clamped at the
    episode end), ``action_is_pad`` bool ``(chunk_size,)`` (True where clamped) and ``task`` (str), all in
    raw units (normalise in the model's processor).

    Args:
        dataset: a :class:`LeRobotDataset` (its episode selection is respected), or a root / repo id.
        cameras: camera names (``"front"``) or keys (``"observation.images.front"``); None for all.
        image_size: training resolution, int or ``(H, W)``.
        chunk_size: actions per sample.
        augment: optional callable on uint8 ``(3, H, W)`` tensors (see :mod:`fastvla.datasets.augment`).
        cache_dir: where frame caches live (default ``~/.cache/fastvla/frames``).
        progress: show a progress bar while building the cache.
        depth: also serve ``observation.depth.<cam>`` of each camera as float32 metres ``(1, H, W)``
            (cached as uint16 millimetres, nearest-neighbour resized; not augmented).
        aux_goal: also serve ``aux_goal`` float32 ``(S,)``, the hindsight goal of the auxiliary loss:
            ``observation.state`` at the episode's last frame minus the state at this frame (raw units).

    Example:
        >>> ds = TrainingDataset(LeRobotDataset("data/pick"), ["front", "wrist"], 128, 8)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: LeRobotDataset | str | os.PathLike,
        cameras: Sequence[str] | None,
        image_size: int | Sequence[int],
        chunk_size: int,
        augment: Augment | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        depth: bool = False,
        aux_goal: bool = False,
    ):
        if not isinstance(dataset, LeRobotDataset):
            dataset = LeRobotDataset(dataset)
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        for key in (OBS_STATE, ACTION):
            if key not in dataset.meta.features:
                raise ValueError(
                    f"dataset at {dataset.root} has no {key!r} feature; it cannot train a policy"
                )
        self.meta = dataset.meta
        self.camera_keys = _camera_keys(dataset, cameras)
        self.image_size = as_hw(image_size)
        self.depth_keys = depth_keys(dataset, self.camera_keys) if depth else []
        self.chunk_size = int(chunk_size)
        self.augment = augment
        self.aux_goal = aux_goal
        self.states = np.ascontiguousarray(dataset.columns[OBS_STATE], dtype=np.float32)
        self.actions = np.ascontiguousarray(dataset.columns[ACTION], dtype=np.float32)
        self.task_index = np.asarray(dataset.columns[TASK_INDEX])
        self.task_names = dataset.meta.task_names
        starts, lengths = dataset.episode_starts, dataset.episode_lengths
        self.episode_stop = (starts + lengths)[dataset.position_episode]  # (N,)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_path = root / cache_key(dataset, self.camera_keys + self.depth_keys, self.image_size)
        self.cache_built_now = False
        if not (self.cache_path / "meta.json").is_file():
            self._build_cache(dataset, progress)
            self.cache_built_now = True
        self._frames: dict[str, np.ndarray] | None = None

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """The dataset's statistics (LeRobot layout) for the normaliser."""
        return self.meta.stats

    def __len__(self) -> int:
        return len(self.states)

    # ------------------------------------------------------------------ cache
    def _build_cache(self, dataset: LeRobotDataset, progress: bool) -> None:
        n, (h, w) = len(dataset), self.image_size
        total = n * (len(self.camera_keys) + len(self.depth_keys))
        with (
            atomic_directory(self.cache_path, overwrite=True) as tmp,
            tqdm(total=total, desc="caching frames", unit="frame", disable=not progress) as bar,
        ):
            for key in self.camera_keys:
                out = np.lib.format.open_memmap(
                    tmp / f"{key}.npy", mode="w+", dtype=np.uint8, shape=(n, 3, h, w)
                )
                if key in dataset.meta.image_keys:
                    self._fill_from_images(dataset, key, out, bar)
                else:
                    self._fill_from_video(dataset, key, out, bar)
                out.flush()
                del out
            for key in self.depth_keys:
                dtype = dataset.meta.features[key]["dtype"]
                np.save(tmp / f"{key}.npy", _depth_mm(dataset.columns[key], dtype, (h, w)))
                bar.update(n)
            meta = {"format": CACHE_FORMAT, "frames": n, "cameras": self.camera_keys, "size": [h, w]}
            meta["depth"] = self.depth_keys
            (tmp / "meta.json").write_text(json.dumps(meta))

    def _fill_from_images(self, dataset: LeRobotDataset, key: str, out: np.ndarray, bar: tqdm) -> None:
        from PIL import Image

        h, w = self.image_size
        for i, value in enumerate(dataset.columns[key]):
            data = value["bytes"] if isinstance(value, dict) else value
            img = Image.open(io.BytesIO(data)).convert("RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR, reducing_gap=None)
            out[i] = np.asarray(img).transpose(2, 0, 1)
            bar.update(1)

    def _fill_from_video(self, dataset: LeRobotDataset, key: str, out: np.ndarray, bar: tqdm) -> None:
        """Decode each mp4 once, in order, assigning every decoded frame to the rows that want it.

        Large caches are decoded in contiguous time segments by a pool of processes (each seeks to its
        segment's keyframe and writes its rows of the memory-mapped cache): decoding small frames is
        bound by per-frame Python work, which threads would serialise.
        """
        targets: dict[Path, list[tuple[float, int]]] = {}
        for slot in range(dataset.num_episodes):
            path, start = dataset.video_location(key, slot)
            lo, hi = dataset.episode_range(slot)
            times = start + dataset.columns[TIMESTAMP][lo:hi].astype(np.float64)
            targets.setdefault(path, []).extend(zip(times.tolist(), range(lo, hi)))
        tol = max(dataset.tolerance_s, 1e-4)
        total = sum(len(w) for w in targets.values())
        workers = _decode_workers(total)
        segments = []
        for path, wanted in targets.items():
            wanted.sort()
            step = max(SEGMENT_MIN_FRAMES, -(-total // (4 * workers)))
            segments += [(path, wanted[i : i + step]) for i in range(0, len(wanted), step)]
        if workers == 1:
            for path, wanted in segments:
                bar.update(_decode_segment(path, self.image_size, wanted, tol, out))
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        out.flush()
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            jobs = [
                pool.submit(_decode_segment, path, self.image_size, wanted, tol, Path(out.filename))
                for path, wanted in segments
            ]
            for job in cf.as_completed(jobs):
                bar.update(job.result())

    def _open_cache(self) -> dict[str, np.ndarray]:
        # Opened lazily so that DataLoader workers each map the files instead of pickling arrays.
        if self._frames is None:
            keys = self.camera_keys + self.depth_keys
            self._frames = {k: np.load(self.cache_path / f"{k}.npy", mmap_mode="r") for k in keys}
        return self._frames

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"] = None
        return state

    # ------------------------------------------------------------------ samples
    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        frames = self._open_cache()
        sample: dict[str, Any] = {}
        for key in self.camera_keys:
            image = torch.from_numpy(np.array(frames[key][idx]))  # (3, H, W) uint8, copied out of the map
            sample[key] = self.augment(image) if self.augment is not None else image
        for key in self.depth_keys:  # (1, H, W) uint16 mm -> float32 metres
            sample[key] = torch.from_numpy(frames[key][idx].astype(np.float32) / DEPTH_UNITS_PER_METRE)
        sample[OBS_STATE] = torch.from_numpy(self.states[idx].copy())
        query = idx + np.arange(self.chunk_size)
        stop = int(self.episode_stop[idx])
        sample[ACTION] = torch.from_numpy(self.actions[np.minimum(query, stop - 1)])  # (chunk, A)
        sample[ACTION_IS_PAD] = torch.from_numpy(query >= stop)
        sample[TASK] = self.task_names[int(self.task_index[idx])]
        if self.aux_goal:
            sample[AUX_GOAL] = torch.from_numpy(self.states[stop - 1] - self.states[idx])  # (S,)
        return sample


def _policy_obs_map(root: Path, cameras: list[str]) -> dict[str, Any] | None:
    """The observation map the dataset was recorded with (any env), for the trained model's cameras:
    the exported policy then reads that env's keys (None: FastVLA env keys)."""
    obs_map = recorded_obs_map(root)
    if obs_map is None or not all(c in obs_map.get("cameras", {}) for c in cameras):
        return None
    depth = obs_map.get("depth") or {}
    return {
        **obs_map,
        "cameras": {c: obs_map["cameras"][c] for c in cameras},
        "depth": {c: depth[c] for c in cameras if c in depth},
    }


class LeRobotTrainingData:
    """The Trainer's data from a LeRobot dataset (v3.0, or v2.1 read in place): implements
    :class:`fastvla.training.data.TrainingData`.

    Example:
        >>> from fastvla.training import DataConfig, TrainConfig
        >>> from fastvla.training.loop import Trainer
        >>> cfg = TrainConfig(data=DataConfig(root="data/pick"))
        >>> Trainer(cfg, data=LeRobotTrainingData())  # the default when data is not given  # doctest: +SKIP
    """

    def inspect(self, cfg: DataConfig, seed: int) -> DataSpec:
        """Read the dataset's metadata, check it has what ``cfg`` asks for and split the episodes.

        Raises:
            ValueError: a requested camera, ``observation.state`` or ``action`` is missing, or the dataset
                is empty.
        """
        if not cfg.root:
            raise ValueError("no dataset given: pass --data.root PATH_OR_REPO_ID (a LeRobot dataset)")
        root = resolve_root(cfg.root)
        meta = DatasetMeta(root)
        available = [camera_of(k) for k in meta.camera_keys if k.startswith("observation.images.")]
        cameras = list(cfg.cameras) or available
        missing = [c for c in cameras if c not in available]
        if missing:
            raise ValueError(f"camera(s) {missing} not in dataset {root}; available: {available}")
        if not cameras:
            raise ValueError(
                f"dataset {root} has no camera features (observation.images.*); a VLA needs images"
            )
        for key in (OBS_STATE, ACTION):
            if key not in meta.features:
                raise ValueError(
                    f"dataset {root} lacks the feature {key!r} the model trains on; "
                    f"it has {sorted(meta.features)}"
                )
        missing_depth = [c for c in cameras if cfg.depth and depth_key(c) not in meta.features]
        if missing_depth:
            raise ValueError(
                f"--data.depth: dataset {root} has no depth for camera(s) {missing_depth} (no "
                f"{[depth_key(c) for c in missing_depth]}); record with depth or drop --data.depth"
            )
        if meta.total_episodes == 0:
            raise ValueError(f"dataset {root} has no episodes")
        stats = {k: dict(v) for k, v in meta.stats.items()}
        if ACTION not in stats or OBS_STATE not in stats:  # no stats on disk: compute them from the frames
            stats = {k: dict(v) for k, v in LeRobotDataset(root).meta.stats.items()}
        train_eps, val_eps = split_episodes(
            [ep["episode_index"] for ep in meta.episodes],
            cfg.episodes,
            cfg.val_episodes,
            cfg.val_fraction,
            seed,
        )
        return DataSpec(
            obs_map=_policy_obs_map(root, cameras),
            root=root,
            cameras=cameras,
            state_dim=int(meta.features[OBS_STATE]["shape"][0]),
            action_dim=int(meta.features[ACTION]["shape"][0]),
            fps=meta.fps,
            stats=stats,
            train_episodes=train_eps,
            val_episodes=val_eps,
        )

    def build(
        self,
        spec: DataSpec,
        cfg: DataConfig,
        episodes: list[int],
        train: bool,
        cache_dir: Path,
        image_size: tuple[int, int],
        progress: bool = True,
        aux_goal: bool = False,
    ) -> TrainingDataset:
        """A :class:`TrainingDataset` over ``episodes`` at ``image_size`` (H, W), augmented when ``train``;
        with ``aux_goal`` its samples carry the hindsight goal (see :class:`TrainingDataset`)."""
        return TrainingDataset(
            LeRobotDataset(spec.root, episodes=episodes),
            cameras=spec.cameras,
            image_size=image_size,
            chunk_size=cfg.chunk_size,
            augment=default_augment() if (train and cfg.augment) else None,
            cache_dir=cache_dir,
            progress=progress,
            depth=cfg.depth,
            aux_goal=aux_goal,
        )
