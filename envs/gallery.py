"""Render a picture of every task from every camera (the images in ``docs/envs.md``).

Task *i* (in registration order) runs its scripted expert from seed *i*; the frame ``--at`` of the way
through the episode is saved per camera as ``<out>/<task>_<camera>.png``, plus ``<out>/overview.png``
(tasks x cameras).

    python -m fastvla.envs.gallery --out docs/images/envs
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image
from tqdm import tqdm

from fastvla.envs import ENV_IDS
from fastvla.envs.base import CAMERAS
from fastvla.utils.io import atomic_write_bytes


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def task_frames(env_id: str, size: int, at: float, seed: int = 0) -> tuple[str, dict[str, np.ndarray]]:
    """Instruction and per-camera frames ``at`` (0..1) of the way through an expert episode."""
    env = gym.make(env_id, cameras=CAMERAS, image_size=size, shadows=True)
    obs, info = env.reset(seed=seed)
    frames = [obs["pixels"]]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        frames.append(obs["pixels"])
        done = terminated or truncated
    env.close()
    return info["task"], frames[min(len(frames) - 1, round(at * (len(frames) - 1)))]


def make_gallery(out: Path, size: int = 256, at: float = 0.6) -> list[Path]:
    """Write ``<task>_<camera>.png`` for every task and camera plus ``overview.png``; returns the paths."""
    written: list[Path] = []
    rows = []
    for seed, env_id in enumerate(tqdm(ENV_IDS, desc="tasks")):
        name = env_id.split("/")[1].removesuffix("-v0")
        task, frames = task_frames(env_id, size, at, seed=seed)
        for cam in CAMERAS:
            path = out / f"{name}_{cam}.png"
            atomic_write_bytes(path, _png(frames[cam]))
            written.append(path)
        rows.append(np.concatenate([frames[cam] for cam in CAMERAS], axis=1))  # (H, cams * W, 3)
        print(f"{name}: {task!r}")
    overview = out / "overview.png"
    atomic_write_bytes(overview, _png(np.concatenate(rows, axis=0)))
    written.append(overview)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/images/envs"), help="output folder")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    parser.add_argument("--at", type=float, default=0.6, help="fraction of the expert episode to show")
    args = parser.parse_args()
    for path in make_gallery(args.out, args.size, args.at):
        print(path)


if __name__ == "__main__":
    main()
