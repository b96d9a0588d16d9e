"""NF4 vs fp32 accuracy of one trained policy: held-out action L1 and closed-loop success on paired seeds.

The same checkpoint is loaded twice — in fp32 and with its vision tower and decoder quantised to NF4
(bitsandbytes) — and compared on:

* **action L1** on held-out demonstrations (episodes recorded with seeds the training never saw), in env
  units over the non-padded steps of every predicted chunk;
* **closed-loop success** on the same evaluation seeds (paired episodes), with Wilson 95% intervals and the
  number of seeds where the two precisions disagree.

Example (after ``make demo``)::

    fastvla bench accuracy --policy outputs/demo/train/policy --episodes 200

Prints a table and writes JSON (default ``benchmarks/results/accuracy.json``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastvla.constants import ACTION, ACTION_IS_PAD

import _common


def held_out_l1(policy, dataset_dir: Path, batch_size: int = 64) -> float:
    """Mean absolute action error (env units) of ``policy`` over the non-padded chunk steps of a dataset."""
    from fastvla.datasets import TrainingDataset

    cfg = policy.model.config
    data = TrainingDataset(
        dataset_dir, cfg.cameras, tuple(cfg.image_size), cfg.chunk_size, cache_dir=dataset_dir / "cache"
    )
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            target, pad = batch.pop(ACTION).numpy(), batch.pop(ACTION_IS_PAD).numpy()  # (B, T, A), (B, T)
            pred = policy._predict(batch)  # (B, T, A) env units
            keep = ~pad
            total += float(np.abs(pred - target)[keep].sum())
            count += int(keep.sum()) * target.shape[-1]
    return total / count


def main() -> None:
    """Run the comparison and write the JSON report."""
    parser = _common.parser(__doc__)
    parser.add_argument("--policy", default="outputs/demo/train/policy", help="trained policy folder")
    parser.add_argument("--env", default="fastvla/ReachCube-v0")
    parser.add_argument("--env-kwargs", default="{}", help="JSON: extra env constructor arguments")
    parser.add_argument("--episodes", type=int, default=200, help="paired closed-loop episodes")
    parser.add_argument("--held-out-episodes", type=int, default=50, help="held-out demos for action L1")
    parser.add_argument("--seed", type=int, default=200_000, help="first evaluation seed")
    parser.add_argument("--n-action-steps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2, help="parallel envs")
    parser.add_argument("--work-dir", default="outputs/accuracy", help="held-out dataset and eval outputs")
    parser.add_argument("--out", default="benchmarks/results/accuracy.json")
    args = parser.parse_args()

    from fastvla.datasets.recorder import record
    from fastvla.envs.rendering import preload_triton
    from fastvla.eval import evaluate, load_policy

    preload_triton()
    work = Path(args.work_dir)
    policies = {
        label: load_policy(
            args.policy, load_in_4bit=four_bit, device="cpu", n_action_steps=args.n_action_steps
        )
        for label, four_bit in (("fp32", False), ("nf4", True))
    }
    cfg = policies["fp32"].model.config
    env_kwargs = {"cameras": tuple(cfg.cameras), "image_size": int(cfg.image_size[0])}
    env_kwargs.update(json.loads(args.env_kwargs))

    held_out = work / "held_out"
    if not (held_out / "meta" / "info.json").exists():
        record(
            args.env,
            held_out,
            episodes=args.held_out_episodes,
            seed=args.seed + 10_000_000,
            env_kwargs={k: v for k, v in env_kwargs.items() if k not in ("cameras", "image_size")},
            cameras=env_kwargs["cameras"],
            image_size=env_kwargs["image_size"],
            progress=False,
        )

    rows, results = {}, {}
    for label, policy in policies.items():
        start = time.perf_counter()
        l1 = held_out_l1(policy, held_out)
        result = evaluate(
            policy,
            args.env,
            n_episodes=args.episodes,
            batch_size=args.batch_size,
            seed=args.seed,
            env_kwargs=env_kwargs,
            out_dir=work / f"eval_{label}",
            max_videos=2,
            progress=False,
            policy_name=label,
        )
        results[label] = result
        rows[label] = {
            "action_l1": l1,
            "success": result.success_rate,
            "success_ci95": list(result.success_ci95),
            "seconds": time.perf_counter() - start,
        }

    outcomes = {k: np.array([e.success for e in r.episodes]) for k, r in results.items()}
    disagree = int((outcomes["fp32"] != outcomes["nf4"]).sum())
    l1_rel = abs(rows["nf4"]["action_l1"] - rows["fp32"]["action_l1"]) / rows["fp32"]["action_l1"]
    gap_pp = 100 * abs(rows["nf4"]["success"] - rows["fp32"]["success"])
    report = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, CPU)",
        "policy": args.policy,
        "env": args.env,
        "env_kwargs": env_kwargs,
        "episodes": args.episodes,
        "seeds": [args.seed, args.seed + args.episodes - 1],
        "rows": rows,
        "paired_disagreements": disagree,
        "success_gap_pp": gap_pp,
        "action_l1_rel_diff": l1_rel,
        "goals": {"success_gap_le_1pp": gap_pp <= 1.0, "action_l1_within_1pct": l1_rel <= 0.01},
    }
    _common.write_json(args.out, report)

    print(
        f"\n{args.env}, {args.episodes} paired episodes (seeds {args.seed}..{args.seed + args.episodes - 1})"
    )
    print(f"{'precision':<10}{'held-out action L1':>20}{'success %':>12}{'95% CI':>18}")
    for label, row in rows.items():
        low, high = row["success_ci95"]
        print(
            f"{label:<10}{row['action_l1']:>20.5f}{100 * row['success']:>12.1f}"
            f"{f'[{100 * low:.1f}, {100 * high:.1f}]':>18}"
        )
    print(
        f"success gap {gap_pp:.1f} pp (goal <= 1), seeds that disagree: {disagree}; "
        f"action L1 relative difference {100 * l1_rel:.2f}% (goal <= 1%)\nwrote {args.out}"
    )


if __name__ == "__main__":
    main()
