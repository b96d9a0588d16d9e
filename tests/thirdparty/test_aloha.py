"""gym-aloha (bimanual, 14-D actions, ``top`` camera) with an instruction, a FastVLA policy and eval."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_aloha", reason="pip install 'fastvla[aloha]' in a separate venv")

from thirdparty_helpers import save_tiny_policy

from fastvla.envs.thirdparty import aloha_observation_map, make_aloha

pytestmark = pytest.mark.slow


def test_fastvla_policy_through_the_map_and_eval_video(tmp_path: Path) -> None:
    from fastvla import policies
    from fastvla.eval import evaluate

    env = make_aloha("AlohaInsertion-v0")
    obs, info = env.reset(seed=0)
    assert obs["pixels"]["top"].shape == (480, 640, 3) and obs["agent_pos"].shape == (14,)
    assert info["task"] == "insert the peg into the socket" and info["is_success"] is False
    path = save_tiny_policy(tmp_path / "policy", ["top"], state_dim=14, action_dim=14)
    obs_map = aloha_observation_map("AlohaInsertion-v0")
    policy = policies.FastVLAPolicy.from_pretrained(
        path, device="cpu", obs_map=obs_map, action_space=env.action_space
    )
    policy.reset()
    for _ in range(3):
        action = policy.select_action(obs)  # 480x640 images resized to the model's 32x32
        assert action.shape == (14,) and np.all(np.abs(action) <= 1)
        obs, _, _, _, info = env.step(action)
        assert info["task"] == "insert the peg into the socket"
    env.close()
    policy.reset()
    result = evaluate(
        policy,
        {"aloha_insertion": functools.partial(make_aloha, "AlohaInsertion-v0")},
        n_episodes=1,
        max_steps=4,
        out_dir=tmp_path / "eval",
        progress=False,
        vectorization="sync",
    )
    assert result.n_episodes == 1
    videos = sorted((tmp_path / "eval").rglob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000
