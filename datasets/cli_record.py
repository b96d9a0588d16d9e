"""``fastvla record``: record scripted-expert demonstrations into a LeRobot v3.0 dataset.

Examples::

    fastvla record --env fastvla/PickCube-v0 --episodes 200 --cameras front,wrist --out data/pick
    # one multi-task dataset, 100 episodes of each task (balanced), instructions never naming purple:
    fastvla record --env fastvla/ReachCube-v0 fastvla/PickCube-v0 fastvla/PushCube-v0 --episodes-per-env 100 \
        --env-kwargs '{"instruction_colors": ["red", "green", "blue", "yellow", "orange"]}' --out data/suite
    # any Gymnasium env: where its cameras, state, instruction and success are, and a scripted expert
    fastvla record --env point_env:PointEnv --expert point_env:expert --episodes 50 --out data/point \
        --obs-map '{"cameras": {"top": "sensors/rgb_top"}, "state": "proprio",
                    "instruction": "info:goal_text", "success": "info:solved"}'

Re-running a command appends new episodes: seeds continue after the earlier runs' (``--seed`` overrides).
"""

from __future__ import annotations

import argparse

from fastvla.datasets.config import RecordConfig
from fastvla.utils.flags import add_command


def run(cfg: RecordConfig) -> int:
    """Record, then print a summary table."""
    from rich.console import Console
    from rich.table import Table

    from fastvla.datasets.recorder import record_suite

    summaries = record_suite(
        cfg.env,
        cfg.out,
        episodes_per_env=cfg.episodes,
        cameras=list(cfg.cameras) or None,
        image_size=cfg.image_size,
        num_envs=cfg.num_envs,
        keep_failed=cfg.keep_failed,
        codec=cfg.codec,
        seed=cfg.seed,
        control_mode=cfg.control_mode,
        expert_noise=cfg.expert_noise,
        max_attempts=cfg.max_attempts,
        env_kwargs=cfg.env_kwargs_dict(),
        depth=cfg.depth,
        obs_map=cfg.observation_map(),
        expert=cfg.expert,
    )
    table = Table(title=f"recorded -> {cfg.out}")
    table.add_column("env", no_wrap=True)
    table.add_column("saved", no_wrap=True)
    for col in ("attempted", "expert success", "frames", "seconds", "instructions", "seeds"):
        table.add_column(col)
    for env_id, summary in zip(cfg.env, summaries, strict=True):
        table.add_row(
            env_id,
            f"{summary.episodes_saved} / {summary.requested}",
            str(summary.episodes_attempted),
            f"{summary.success_rate:.1%}",
            str(summary.frames_saved),
            f"{summary.seconds:.1f}",
            str(len(summary.tasks)),
            f"{summary.seed}..",
        )
    console = Console(width=max(Console().width, 132))  # the table stays readable in logs and pipes
    console.print(table)
    short = [(e, s) for e, s in zip(cfg.env, summaries, strict=True) if not s.complete]
    for env_id, summary in short:
        console.print(
            f"[red]{env_id}: only {summary.episodes_saved} of {summary.requested} episodes succeeded within "
            f"{summary.episodes_attempted} attempts[/red]: lower --expert-noise, pass --keep-failed, or "
            "raise --max-attempts. The saved episodes are in the dataset."
        )
    return 1 if short else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla record``."""
    help_text = "record expert demonstrations into a LeRobot dataset"
    return add_command(subparsers, "record", help_text, __doc__, run, RecordConfig)
