"""benchmarks/vision_probe.py tells a policy that ignores its cameras from one whose actions follow them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastvla.policies import ObservationMap

PROBE = Path(__file__).resolve().parents[2] / "benchmarks" / "vision_probe.py"


@pytest.fixture(scope="module")
def probe() -> Any:
    spec = importlib.util.spec_from_file_location("vision_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Stub:
    """A policy whose first action is ``fn(obs)``, padded to the 7-D action of the built-in tasks."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.obs_map = ObservationMap.for_fastvla_env(["front"])

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, obs: dict[str, Any], task: str) -> np.ndarray:
        return np.concatenate([self.fn(obs), np.zeros(4)])[None, None]


def test_blind_policy_has_no_image_effect_and_no_r2(probe: Any) -> None:
    blind = _Stub(lambda obs: np.asarray(obs["agent_pos"][:3], dtype=np.float64))  # state only
    row = probe.probe_task(blind, "fastvla/ReachCube-v0", list(range(6)), image_size=32)
    assert row["image_effect"] == 0.0
    assert row["expert_spread"] > 0.05  # the expert's first move does depend on the scene
    assert row["r2_vs_expert"] <= 0.0


def test_looking_policy_has_an_image_effect(probe: Any) -> None:
    # The mean colour of the front image: changes with the scene (cube colours and places).
    looking = _Stub(lambda obs: obs["pixels"]["front"].reshape(-1, 3).mean(0) / 255.0)
    row = probe.probe_task(looking, "fastvla/ReachCube-v0", list(range(6)), image_size=32)
    assert row["image_effect"] > 1e-4
    assert "| ReachCube-v0 |" in probe.format_table({"tasks": [row]})


def test_stage_recorder_finds_the_stage_where_the_scene_stops_mattering(probe: Any) -> None:
    """A model whose ``fusion`` ignores its input: the tower varies with the scene, the fusion does not."""

    class Ignore(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(3) + 0 * x.sum()

    model = torch.nn.Module()
    model.vision, model.fusion = torch.nn.Linear(4, 3), Ignore()
    recorder = probe.StageRecorder(type("P", (), {"model": model})())
    scenes = torch.randn(5, 4)
    for i, scene in enumerate(scenes):
        recorder.active = i < 4  # the fifth pass (a swapped-image pass) is not recorded
        model.fusion(model.vision(scene))
    recorder.close()
    model.vision(scenes[0])  # hooks removed: nothing more is recorded
    variation = recorder.variation()
    assert set(variation) == {"vision", "fusion"} and len(recorder.outputs["vision"]) == 4
    assert variation["vision"] > 0.1 and variation["fusion"] == 0.0
