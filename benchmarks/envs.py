"""Tabletop suite benchmark: expert success, physics speed and rendering speed per task.

For every task: the scripted expert's success rate over ``--episodes`` seeds (seed i = episode i) against
a random policy (the baseline) on a few seeds, MuJoCo physics steps/s, control steps/s (IK + 50 physics
substeps, no rendering), and camera-frames/s for 2 cameras (front + wrist) at 128x128 and 224x224,
with the default fast settings and with shadows + reflections on (the baseline).

    python benchmarks/envs.py                      # or: fastvla bench envs
    python benchmarks/envs.py --episodes 20 --tasks ReachCube PickCube
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from tqdm import tqdm

import fastvla.envs
from fastvla.envs.rendering import CameraRenderer

import _common

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "envs.json"


def rollout_success(env: gym.Env, seeds: range, policy: str, desc: str) -> tuple[float, float]:
    """Success rate and mean episode length of ``policy`` ("expert" or "random") over ``seeds``."""
    wins, lengths = 0, []
    for seed in tqdm(seeds, desc=desc, leave=False):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        steps, done = 0, False
        while not done:
            action = env.unwrapped.expert_action() if policy == "expert" else env.action_space.sample()
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        wins += bool(info["is_success"])
        lengths.append(steps)
    return wins / len(seeds), float(np.mean(lengths))


def physics_speed(env: gym.Env, steps: int) -> tuple[float, float]:
    """(MuJoCo physics steps/s, control steps/s with IK and substeps but no rendering)."""
    env.reset(seed=0)
    phys = env.unwrapped.physics
    start = time.perf_counter()
    mujoco.mj_step(phys.model, phys.data, nstep=steps * 10)
    physics_sps = steps * 10 / (time.perf_counter() - start)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        q = env.unwrapped._ee_delta_to_joints(rng.uniform(-0.3, 0.3, 7))
        phys.step(q, 1.0)
    return physics_sps, steps / (time.perf_counter() - start)


def render_speed(env: gym.Env, size: int, frames: int, pretty: bool) -> float:
    """Camera-frames/s rendering front + wrist at ``size``^2 (``pretty``: shadows + reflections on)."""
    env.reset(seed=0)
    phys = env.unwrapped.physics
    renderer = CameraRenderer(phys.model, size, size, shadows=pretty, reflections=pretty)
    cams = ("front", "wrist")
    renderer.render(phys.data, cams)  # create the context outside the timing
    start = time.perf_counter()
    for _ in range(frames // len(cams)):
        renderer.render(phys.data, cams)
    fps = (frames // len(cams)) * len(cams) / (time.perf_counter() - start)
    renderer.close()
    return fps


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "mujoco": mujoco.__version__},
        "gl_backend": os.environ.get("MUJOCO_GL"),
        # Software-GL timings swing with other work on the machine; record the load they ran under.
        "load_average_start": os.getloadavg(),
        "episodes": args.episodes,
        "tasks": {},
    }
    for name in args.tasks:
        env_id = f"fastvla/{name}-v0"
        env = gym.make(env_id, cameras=("front",), image_size=16)
        expert, expert_len = rollout_success(env, range(args.episodes), "expert", f"{name} expert")
        random_rate, _ = rollout_success(env, range(args.random_episodes), "random", f"{name} random")
        physics_sps, control_sps = physics_speed(env, args.physics_steps)
        row: dict[str, Any] = {
            "expert_success": expert,
            "expert_mean_steps": expert_len,
            "random_success": random_rate,
            "physics_steps_per_s": physics_sps,
            "control_steps_per_s": control_sps,
        }
        for size in (128, 224):
            row[f"fps_{size}"] = render_speed(env, size, args.frames, pretty=False)
            row[f"fps_{size}_shadows_reflections"] = render_speed(env, size, args.frames, pretty=True)
        env.close()
        results["tasks"][name] = row
        print_row(name, row)
    return results


# (column title, JSON key, format)
COLUMNS = [
    ("expert", "expert_success", "{:.0%}"),
    ("random", "random_success", "{:.0%}"),
    ("steps", "expert_mean_steps", "{:.1f}"),
    ("physics/s", "physics_steps_per_s", "{:,.0f}"),
    ("ctrl/s", "control_steps_per_s", "{:.0f}"),
    ("fps128", "fps_128", "{:.0f}"),
    ("(pretty)", "fps_128_shadows_reflections", "{:.0f}"),
    ("fps224", "fps_224", "{:.0f}"),
    ("(pretty)", "fps_224_shadows_reflections", "{:.0f}"),
]


def header() -> str:
    return f"{'task':<11}" + "".join(f"{title:>11}" for title, _, _ in COLUMNS)


def print_row(name: str, row: dict[str, Any]) -> None:
    cells = [fmt.format(row[key]) if key in row else "-" for _, key, fmt in COLUMNS]
    print(f"{name:<11}" + "".join(f"{c:>11}" for c in cells), flush=True)


def main() -> None:
    names = [eid.split("/")[1].removesuffix("-v0") for eid in fastvla.envs.ENV_IDS]
    parser = _common.parser(__doc__)
    parser.add_argument("--episodes", type=int, default=100, help="expert episodes (seeds 0..N-1) per task")
    parser.add_argument("--random-episodes", type=int, default=10, help="random-policy baseline episodes")
    parser.add_argument("--tasks", nargs="+", default=names, choices=names)
    parser.add_argument("--physics-steps", type=int, default=200, help="control steps for the speed test")
    parser.add_argument("--frames", type=int, default=400, help="camera frames per rendering measurement")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args()
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {os.cpu_count()} CPUs; fps = camera-frames/s, 2 cameras")
    print(header())
    results = run(args)
    results["load_average_end"] = os.getloadavg()
    print(f"load average {results['load_average_start'][0]:.1f} -> {results['load_average_end'][0]:.1f}")
    _common.write_json(args.json, results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
