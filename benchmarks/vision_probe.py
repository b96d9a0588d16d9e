"""Does a policy look? Image sensitivity of its actions, against the scripted expert, on the built-in tasks.

A behaviour-cloned policy can reach a low loss by predicting what the *state* alone implies (move down,
close the gripper) and the dataset mean for everything that depends on *where* things are — then it drives
to the same place in every episode, whatever the scene. Closed-loop success shows the failure only as a
number near chance; this probe shows its cause in a few forward passes, no rollouts:

* for ``--seeds`` fresh resets of each task, the policy's first action on its own observation, and on the
  same observation with the **camera images of another seed** swapped in (state and instruction unchanged);
* ``image effect``: mean |action(own images) - action(swapped images)| over the translation dimensions,
  against the spread of the expert's translation across seeds (what the images *should* change);
* ``R^2 vs expert``: how much of the expert's translation variance across seeds the policy's first
  action explains (1 = it follows the scene like the expert, <= 0 = no better than a constant);
* for a FastVLA policy, ``scene variation`` of each stage of the image path (vision tower, projector,
  latent fusion, spatial-softmax keypoint summary): ||x - mean over seeds|| / ||x|| of the stage's output on
  the own-image passes, which shows where the scene stops mattering.

Example::

    python benchmarks/vision_probe.py --policy fastvla/checkpoints/sim-base --seeds 32

Prints a table and writes JSON (default ``benchmarks/results/vision_probe.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fastvla.envs import ENV_IDS  # importing fastvla.envs registers the tasks
from fastvla.eval.report import git_revision
from fastvla.utils.io import atomic_write_text

TRANSLATION = slice(0, 3)  # end-effector delta x, y, z of the 7-D action


def first_action(policy: Any, obs: dict[str, Any], task: str) -> np.ndarray:
    """The first action of the chunk the policy predicts for ``obs`` (its queue cleared first)."""
    policy.reset()
    chunk = np.asarray(policy.predict_action_chunk(obs, task=task), dtype=np.float64)
    return chunk.reshape(-1, chunk.shape[-1])[0]


#: Image-path modules of a FastVLAModel whose outputs ``stage_variation`` follows, in data-flow order.
STAGES = ("vision", "projector", "fusion", "keypoint_proj")


class StageRecorder:
    """Forward hooks on a FastVLA model's image-path modules, keeping each output while ``active``."""

    def __init__(self, policy: Any) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.active = False
        self._handles = []
        model = getattr(policy, "model", None)
        for name in STAGES:
            module = getattr(model, name, None)
            if isinstance(module, torch.nn.Module):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def keep(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            if self.active:
                self.outputs.setdefault(name, []).append(output.detach().float().cpu().flatten())

        return keep

    def variation(self) -> dict[str, float]:
        """||x - mean|| / ||x|| over the recorded passes, per stage (0 = the same for every scene)."""
        out = {}
        for name, values in self.outputs.items():
            x = torch.stack(values)  # (passes, features)
            out[name] = float((x - x.mean(0)).norm() / x.norm().clamp(min=1e-12))
        return out

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def probe_task(policy: Any, env_id: str, seeds: list[int], image_size: int) -> dict[str, Any]:
    """Own-image, swapped-image and expert first actions of ``env_id`` over ``seeds``."""
    env = gym.make(env_id, image_size=image_size, cameras=tuple(policy.obs_map.cameras))
    try:
        resets, experts = [], []
        for s in seeds:  # the expert's first action, read while the env is in that seed's first state
            resets.append(env.reset(seed=s))
            experts.append(np.asarray(env.unwrapped.expert_action(), dtype=np.float64))
    finally:
        env.close()
    own, swapped = [], []
    stages = StageRecorder(policy)
    try:
        for i, (obs, info) in enumerate(resets):
            other = copy.copy(obs)
            other["pixels"] = resets[(i + 1) % len(resets)][0]["pixels"]  # another scene, same state, task
            stages.active = True
            own.append(first_action(policy, obs, info["task"]))
            stages.active = False
            swapped.append(first_action(policy, other, info["task"]))
    finally:
        stages.close()
    own_t, swap_t = np.stack(own)[:, TRANSLATION], np.stack(swapped)[:, TRANSLATION]
    exp_t = np.stack(experts)[:, TRANSLATION]
    residual = ((own_t - exp_t) ** 2).sum()
    total = ((exp_t - exp_t.mean(0)) ** 2).sum()
    return {
        "env": env_id,
        "seeds": seeds,
        "image_effect": float(np.abs(own_t - swap_t).mean()),
        "expert_spread": float(np.abs(exp_t - exp_t[np.roll(np.arange(len(seeds)), -1)]).mean()),
        "r2_vs_expert": float(1 - residual / total) if total > 0 else float("nan"),
        "policy_translation_std": own_t.std(0).round(4).tolist(),
        "expert_translation_std": exp_t.std(0).round(4).tolist(),
        "stage_variation": {k: round(v, 5) for k, v in stages.variation().items()},
    }


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of a probe report."""
    lines = [
        "| task | image effect | expert spread | R^2 vs expert | policy std (x, y, z) "
        "| expert std (x, y, z) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["tasks"]:
        lines.append(
            f"| {r['env'].split('/')[-1]} | {r['image_effect']:.4f} | {r['expert_spread']:.4f} | "
            f"{r['r2_vs_expert']:.2f} | {r['policy_translation_std']} | {r['expert_translation_std']} |"
        )
    if any(r.get("stage_variation") for r in report["tasks"]):
        lines += ["", "Scene variation of each image-path stage's output (0 = the same for every scene):", ""]
        lines += ["| task | " + " | ".join(STAGES) + " |", "|---" * (len(STAGES) + 1) + "|"]
        for r in report["tasks"]:
            cells = [f"{r['stage_variation'][k]:.4f}" if k in r["stage_variation"] else "-" for k in STAGES]
            lines.append(f"| {r['env'].split('/')[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, probe every task, print the table and write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", default="fastvla/checkpoints/sim-base", help="policy folder")
    parser.add_argument("--tasks", nargs="*", default=list(ENV_IDS), help="env ids")
    parser.add_argument("--seeds", type=int, default=32, help="resets per task")
    parser.add_argument("--seed", type=int, default=300_000, help="first seed (never recorded)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/vision_probe.json")
    args = parser.parse_args()

    from fastvla.policies import FastVLAPolicy

    torch.manual_seed(0)
    policy = FastVLAPolicy.from_pretrained(args.policy)
    seeds = list(range(args.seed, args.seed + args.seeds))
    report = {
        "policy": args.policy,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "git_revision": (git_revision() or {}).get("commit", "unknown"),
        "command": "python benchmarks/vision_probe.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "tasks"),
        "tasks": [probe_task(policy, t, seeds, args.image_size) for t in args.tasks],
    }
    print(format_table(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
