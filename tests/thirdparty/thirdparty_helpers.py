"""Helpers of the third-party env tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fastvla import model as model_mod


def save_tiny_policy(
    path: Path, cameras: list[str], state_dim: int, action_dim: int, image_size: int = 32
) -> Path:
    """Save an untrained tiny FastVLA model + processor (a smoke-test policy) to ``path``."""
    torch.manual_seed(0)
    kw = {"cameras": cameras, "state_dim": state_dim, "action_dim": action_dim, "chunk_size": 4}
    model = model_mod.FastVLAModel.from_preset("tiny", image_size=image_size, **kw)
    stats = {
        "observation.state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"min": [-1.0] * action_dim, "max": [1.0] * action_dim},
    }
    processor = model_mod.FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
