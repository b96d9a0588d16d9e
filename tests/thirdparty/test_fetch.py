"""gymnasium-robotics Fetch: goal-dict observations get rendered cameras, a state and an instruction."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics", reason="pip install 'fastvla[robotics]' in a separate venv")

from fastvla.envs.thirdparty import fetch_observation_map, make_fetch

pytestmark = pytest.mark.slow


def test_fetch_goal_dict_gets_pixels_state_and_instruction() -> None:
    env = make_fetch("FetchPickAndPlace-v4", image_size=32, render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert set(obs) == {"observation", "achieved_goal", "desired_goal", "pixels", "agent_pos"}
        for cam in ("external_camera_0", "behind"):
            image = obs["pixels"][cam]
            assert image.shape == (32, 32, 3) and image.std() > 5  # not a blank frame
        np.testing.assert_allclose(obs["agent_pos"][:3], obs["observation"][:3], rtol=1e-6)
        assert info["task"] == "pick up the black block and place it at the red target"
        obs, _, _, _, info = env.step(env.action_space.sample())
        assert isinstance(info["is_success"], bool)
        np.testing.assert_array_equal(env.render(), obs["pixels"]["external_camera_0"])
    finally:
        env.close()


def test_fetch_observation_map() -> None:
    obs_map = fetch_observation_map("FetchReach-v4")
    assert obs_map.cameras == {"external_camera_0": "pixels/external_camera_0", "behind": "pixels/behind"}
    assert obs_map.state == "agent_pos" and obs_map.instruction == "move the gripper to the red target"
    # a task without a sentence gets its base name in both the env and the map (the map said None before)
    assert fetch_observation_map("FetchSlideDense-v4").instruction == "slide the black puck to the red target"
    assert fetch_observation_map("FetchCustomDense-v1").instruction == "FetchCustom"
    assert fetch_observation_map("FetchReach-v4", instruction="go").instruction == "go"


@pytest.mark.parametrize("task", ["FetchReach-v4", "FetchPickAndPlace-v4"])
def test_heuristic_expert_solves_the_task(task: str) -> None:
    env = make_fetch(task, cameras=("behind",), image_size=8)
    try:
        for seed in (0, 1):
            env.reset(seed=seed)
            for _ in range(50):  # Fetch's episode length
                action = env.get_wrapper_attr("expert_action")()
                assert env.action_space.contains(action)
                *_, info = env.step(action)
                if info["is_success"]:
                    break
            assert info["is_success"], f"{task} heuristic failed for seed {seed}"
    finally:
        env.close()


def test_depth_maps_and_their_observation_map() -> None:
    env = make_fetch("FetchReach-v4", image_size=16, depth=True)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        depth = obs["depth"]["external_camera_0"]
        assert depth.shape == (16, 16) and depth.dtype == np.float32
        assert 0.1 < float(np.median(depth)) < 10  # metres (the far plane shows where no geometry is)
    finally:
        env.close()
    obs_map = fetch_observation_map("FetchReach-v4", depth=True)
    assert obs_map.depth == {"external_camera_0": "depth/external_camera_0", "behind": "depth/behind"}
