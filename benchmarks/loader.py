"""Training-loader throughput: frame cache (cold and warm) vs per-sample seek-and-decode (lerobot's way).

Samples are what training consumes: 2 cameras at 128x128, the state, and an 8-step action chunk with its
pad mask. Three ways, in one run, on the same dataset:

* ``baseline``: :class:`LeRobotDataset` with ``delta_timestamps`` for the chunk; every sample seeks in
  each camera's mp4 and decodes its frame (what lerobot does per ``__getitem__``).
* ``cold``: :class:`TrainingDataset`'s first epoch, including decoding every video once into the cache.
* ``warm``: a later epoch (or a later run): memory-mapped uint8 frames only.

Without ``--dataset``, a synthetic dataset (moving shapes plus sensor noise, H.264 as ``fastvla record``
writes) is created in a temporary folder. Reports samples/s and the warm/baseline speed-up (goal >= 5x).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvla.datasets import LeRobotDataset, LeRobotDatasetWriter, TrainingDataset

import _common

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "loader.json"
CAMERAS = ("front", "wrist")


def synthetic_dataset(root: Path, episodes: int, length: int, size: int, codec: str) -> Path:
    """Episodes of moving coloured squares over a gradient, with mild noise (realistic for a codec)."""
    rng = np.random.default_rng(0)
    feats: dict[str, Any] = {
        f"observation.images.{c}": {"dtype": "video", "shape": (size, size, 3)} for c in CAMERAS
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (8,)}
    feats["action"] = {"dtype": "float32", "shape": (7,)}
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([xx * 200 // size, yy * 200 // size, np.full_like(xx, 90)], -1).astype(np.int16)
    writer = LeRobotDatasetWriter(root, fps=10, features=feats, codec=codec)
    for e in range(episodes):
        for t in range(length):
            frame: dict[str, Any] = {}
            for k, cam in enumerate(CAMERAS):
                img = background.copy()
                x, y = (5 * t + 13 * e + 40 * k) % (size - 20), (3 * t + 7 * e) % (size - 20)
                img[y : y + 20, x : x + 20] = (220, 40 + 60 * k, 40)
                img += rng.integers(-6, 7, img.shape, dtype=np.int16)
                frame[f"observation.images.{cam}"] = np.clip(img, 0, 255).astype(np.uint8)
            frame["observation.state"] = rng.standard_normal(8).astype(np.float32)
            frame["action"] = rng.standard_normal(7).astype(np.float32)
            writer.add_frame(frame, task=f"task {e % 4}")
        writer.save_episode()
    writer.finalize()
    return root


def _iterate(dataset: torch.utils.data.Dataset, indices: list[int], batch_size: int, workers: int) -> float:
    """Seconds to load ``indices`` through a DataLoader."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=workers, shuffle=False
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="fastvla-loader-bench-")
    work = Path(tmp.name)
    if args.dataset:
        root = Path(args.dataset)
    else:
        start = time.perf_counter()
        root = synthetic_dataset(work / "dataset", args.episodes, args.length, args.image_size, args.codec)
        print(
            f"wrote synthetic dataset ({args.episodes} x {args.length} frames) "
            f"in {time.perf_counter() - start:.1f}s"
        )
    chunk = [i / 10 for i in range(args.chunk)]
    base = LeRobotDataset(root, delta_timestamps={"action": chunk})
    n = len(base)
    rng = np.random.default_rng(0)
    order = rng.permutation(n).tolist()
    rows: dict[str, dict[str, Any]] = {}

    sub = order[: min(args.baseline_samples, n)]
    seconds = _iterate(base, sub, args.batch_size, args.workers)
    rows["baseline (seek + decode per sample)"] = {"samples": len(sub), "seconds": seconds}

    cache_dir = work / "cache"
    start = time.perf_counter()
    train = TrainingDataset(base, CAMERAS, args.image_size, args.chunk, cache_dir=cache_dir, progress=False)
    build = time.perf_counter() - start
    first_epoch = _iterate(train, order, args.batch_size, args.workers)
    rows["cold (decode once into cache + epoch 1)"] = {
        "samples": n,
        "seconds": build + first_epoch,
        "cache_build_s": build,
    }
    warm = TrainingDataset(base, CAMERAS, args.image_size, args.chunk, cache_dir=cache_dir, progress=False)
    assert not warm.cache_built_now
    seconds = min(_iterate(warm, order, args.batch_size, args.workers) for _ in range(args.repeats))
    rows["warm (cache)"] = {"samples": n, "seconds": seconds}
    for row in rows.values():
        row["samples_per_s"] = row["samples"] / row["seconds"]
    baseline = rows["baseline (seek + decode per sample)"]["samples_per_s"]
    for row in rows.values():
        row["speedup_vs_baseline"] = row["samples_per_s"] / baseline
    cache_mb = sum(p.stat().st_size for p in cache_dir.rglob("*.npy")) / 2**20
    tmp.cleanup()
    return {
        "config": {
            "frames": n,
            "episodes": base.num_episodes,
            "cameras": list(CAMERAS),
            "image_size": args.image_size,
            "chunk": args.chunk,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "torch_threads": torch.get_num_threads(),
            "codec": args.codec if not args.dataset else "dataset",
            "dataset": str(args.dataset or "synthetic"),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "cache_mb": cache_mb,
        "rows": rows,
        "goal": "warm >= 5x baseline",
        "goal_met": rows["warm (cache)"]["speedup_vs_baseline"] >= 5.0,
    }


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--dataset", help="existing dataset root (default: synthetic)")
    parser.add_argument("--episodes", type=int, default=20, help="synthetic episodes (default 20)")
    parser.add_argument("--length", type=int, default=50, help="frames per synthetic episode (default 50)")
    parser.add_argument(
        "--image-size", type=int, default=128, help="camera / training resolution (default 128)"
    )
    parser.add_argument("--codec", default="h264", choices=["h264", "av1"], help="synthetic dataset codec")
    parser.add_argument("--chunk", type=int, default=8, help="action chunk length (default 8)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--baseline-samples", type=int, default=300, help="samples timed for the baseline")
    parser.add_argument("--repeats", type=int, default=2, help="warm epochs (best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args()
    # One intra-op thread, as inside DataLoader workers (and robust on a shared, loaded machine).
    torch.set_num_threads(args.threads)
    results = run(args)
    cfg = results["config"]
    print(
        f"\n{cfg['frames']} frames, {len(cfg['cameras'])} cameras at {cfg['image_size']}², "
        f"chunk {cfg['chunk']}, "
        f"batch {cfg['batch_size']}, {cfg['workers']} workers, {results['machine']['cpus']} CPUs"
    )
    print(f"{'loader':<42} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'vs baseline':>12}")
    for name, row in results["rows"].items():
        print(
            f"{name:<42} {row['samples']:>8} {row['seconds']:>8.2f} {row['samples_per_s']:>10.1f} "
            f"{row['speedup_vs_baseline']:>11.1f}x"
        )
    print(
        f"cache size {results['cache_mb']:.1f} MB; goal {results['goal']}: "
        f"{'met' if results['goal_met'] else 'NOT met'}"
    )
    _common.write_json(args.json, results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
