"""``fastvla train``: fine-tune a FastVLA policy on a LeRobot dataset.

Every flag maps to a field of :class:`fastvla.training.TrainConfig` (``--optim.lr`` is
``config.optim.lr``). A run's resolved config is saved as ``<output-dir>/config.yaml``; pass it back with
``--config`` to repeat or resume a run. Data-parallel: ``accelerate launch --multi_gpu --num_processes N
-m fastvla train ...`` (the same command runs gloo DDP over CPU processes on a machine without GPUs;
accelerate's own ``--cpu`` flag starts a single process).

Examples:
    fastvla train --data.root data/pick --steps 2000 --batch-size 32 --output-dir runs/pick
    fastvla train --config runs/pick/config.yaml --resume
    fastvla train --data.root data/pick --model.vision-backbone google/siglip-base-patch16-224 \\
        --model.text-backbone HuggingFaceTB/SmolLM2-360M --model.quantization 4bit \\
        --optim.optimizer paged_adamw8bit --model.gradient-checkpointing
"""

from __future__ import annotations

import argparse
import os

from fastvla.training.config import TrainConfig
from fastvla.utils.flags import add_command


def run(config: TrainConfig) -> int:
    """Train with the resolved config."""
    # deferred: start-up time (`fastvla --help` builds this parser without torch)
    from fastvla.training.loop import train

    policy_dir = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"policy saved to {policy_dir} (load with FastVLAPolicy.from_pretrained({str(policy_dir)!r}))")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla train``."""
    help_text = "fine-tune a policy on a LeRobot dataset"
    return add_command(subparsers, "train", help_text, __doc__, run, TrainConfig)
