"""Does depth change success? The same task, data, model and seeds, trained with and without depth maps.

One dataset is recorded with depth (``fastvla record --depth``); two policies are trained on it from the
same seed with identical settings, one on RGB only and one with ``--data.depth`` (the model then takes a
depth map per camera); both are evaluated on the same unseen seeds in the same env (rendering depth). The
report gives each success rate with its Wilson 95% interval and the paired difference (RGB-D - RGB) with its
95% interval. Every stage is a plain ``fastvla`` command, printed and kept in the JSON.

Example (2-core CPU, ~20 minutes)::

    python benchmarks/depth_effect.py --env fastvla/ReachCube-v0 --demos 250 --steps 1500 --episodes 50

Prints a table and writes JSON (default ``benchmarks/results/depth_effect.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from suite import paired_difference

from fastvla.eval.metrics import wilson_interval

from _common import FASTVLA, parser, run_fastvla, write_json


def _run(cmd: list[str], log: list[str]) -> None:
    run_fastvla(cmd, log.append)


def _outcomes(eval_dir: Path) -> tuple[list[int], np.ndarray]:
    """Seeds and 0/1 outcomes of an evaluation, in seed order."""
    episodes = json.loads((eval_dir / "eval_info.json").read_text())["per_episode"]
    episodes = sorted(episodes, key=lambda e: e["seed"])
    return [e["seed"] for e in episodes], np.array([bool(e["success"]) for e in episodes], dtype=np.int64)


def main() -> None:
    """Record, train both variants, evaluate both, report."""
    p = parser(__doc__)
    p.add_argument("--env", default="fastvla/ReachCube-v0")
    p.add_argument("--demos", type=int, default=250, help="recorded demonstrations")
    p.add_argument("--steps", type=int, default=1500, help="training updates of each variant")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes (seeds) per variant")
    p.add_argument("--eval-seed", type=int, default=100_000, help="first evaluation seed (never recorded)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--num-envs", type=int, default=2, help="parallel envs while recording and evaluating")
    p.add_argument("--work", default="outputs/depth_effect")
    p.add_argument("--out", default="benchmarks/results/depth_effect.json")
    args = p.parse_args()

    work, log, start = Path(args.work), [], time.perf_counter()
    env_kwargs = json.dumps({"depth": True, "image_size": args.image_size})
    data = work / "data"
    if not (data / "meta" / "info.json").is_file():
        _run([*FASTVLA, "record", "--env", args.env, "--episodes", str(args.demos), "--depth",
              "--image-size", str(args.image_size), "--num-envs", str(args.num_envs), "--expert-noise", "0.1",
              "--out", str(data)], log)  # fmt: skip
    rows: dict[str, Any] = {}
    for name, extra in (("rgb", []), ("rgbd", ["--data.depth"])):
        run, evals = work / name, work / f"eval_{name}"
        if not (run / "policy").is_dir():
            _run([*FASTVLA, "train", "--data.root", str(data), "--model.preset", args.preset, *extra,
                  "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", "0",
                  "--data.val-fraction", "0", "--output-dir", str(run), "--no-progress", "--overwrite"],
                 log)  # fmt: skip
        _run([*FASTVLA, "eval", "--policy", str(run / "policy"), "--env", args.env,
              "--episodes", str(args.episodes), "--seed", str(args.eval_seed),
              "--batch-size", str(args.num_envs), "--env-kwargs", env_kwargs, "--max-videos", "4",
              "--out", str(evals), "--no-progress"],
             log)  # fmt: skip
        seeds, outcome = _outcomes(evals)
        low, high = wilson_interval(int(outcome.sum()), len(outcome))
        rows[name] = {"seeds": seeds, "successes": int(outcome.sum()), "episodes": len(outcome),
                      "success_rate": float(outcome.mean()), "success_ci95": [low, high],
                      "per_episode_success": outcome.tolist()}  # fmt: skip
    if rows["rgb"]["seeds"] != rows["rgbd"]["seeds"]:
        raise RuntimeError("the two evaluations ran different seeds; nothing to pair")
    paired = paired_difference(
        np.array(rows["rgb"]["per_episode_success"]), np.array(rows["rgbd"]["per_episode_success"])
    )
    report = {"env": args.env, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "commands": log, "rgb": rows["rgb"], "rgbd": rows["rgbd"], "rgbd_minus_rgb": paired,
              "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip
    print("| inputs | success % | 95% CI |\n|---|---|---|")
    for name, label in (("rgb", "RGB"), ("rgbd", "RGB + depth")):
        r = rows[name]
        print(f"| {label} | {100 * r['success_rate']:.0f} | "
              f"[{100 * r['success_ci95'][0]:.0f}, {100 * r['success_ci95'][1]:.0f}] |")  # fmt: skip
    lo, hi = paired["ci95_pp"]
    print(f"RGB-D - RGB: {paired['diff_pp']:+.1f} pp [{lo:+.1f}, {hi:+.1f}] over {paired['n']} paired seeds")
    print(f"wrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
