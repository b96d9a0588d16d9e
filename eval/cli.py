"""``fastvla eval``: evaluate a policy in closed loop and write eval_info.json, videos and a report.

Every flag is a field of :class:`~fastvla.eval.EvalPipelineConfig` (the rollout options those of its
:class:`~fastvla.eval.EvalConfig`); ``--print-config`` shows the resolved config, ``--config FILE`` reads one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastvla.eval.config import EvalPipelineConfig
from fastvla.utils.flags import add_command

#: The resolved config beside eval_info.json: `fastvla eval --config` repeats the run.
EVAL_CONFIG = "eval_config.yaml"

EXAMPLES = """examples:
  fastvla eval --policy scripted --env fastvla/PickCube-v0 --episodes 20 --out outputs/eval/scripted
  fastvla eval --policy outputs/train/tiny --env fastvla/ReachCube-v0 --episodes 100 --batch-size 8 \\
      --seed 0 --out outputs/eval/tiny --load-in-4bit
  fastvla eval --policy ws://localhost:8765 --env fastvla/PickCube-v0 --episodes 50 --out outputs/eval/remote
  fastvla eval --config outputs/eval/tiny/eval_config.yaml --episodes 10
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fastvla eval`` on the top-level sub-parsers."""
    help_text = "evaluate a policy in simulation (success rate, videos, report)"
    return add_command(subparsers, "eval", help_text, __doc__, run, EvalPipelineConfig, epilog=EXAMPLES)


def run(cfg: EvalPipelineConfig) -> int:
    """Run the evaluation the config describes and print the summary table."""
    if cfg.eval.out_dir is None:
        raise ValueError("--out is required: the folder for eval_info.json, report.md and videos/")
    from fastvla.eval import evaluate
    from fastvla.eval.report import print_summary
    from fastvla.policies import load_policy

    policy = load_policy(cfg.policy, **cfg.policy_kwargs())
    result = evaluate(
        policy,
        list(cfg.env) if len(cfg.env) > 1 else cfg.env[0],
        cfg.eval,
        policy_name=cfg.policy,
        obs_map=cfg.observation_map(),
        metadata={
            "load_in_4bit": cfg.load_in_4bit,
            "device": cfg.device,
            "n_action_steps": cfg.n_action_steps,
            "command": "fastvla eval",
        },
    )
    out = Path(cfg.eval.out_dir)
    cfg.save(out / EVAL_CONFIG)
    print_summary(result.info)
    print(f"results: {out / 'eval_info.json'}  report: {out / 'report.md'}  config: {out / EVAL_CONFIG}")
    return 0
