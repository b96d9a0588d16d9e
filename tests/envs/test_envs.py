"""Behavioural tests of the tabletop suite: API contract, determinism, experts, bad actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import fastvla.envs
from fastvla.envs import ENV_IDS

SMALL = {"image_size": 32}


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**SMALL, **kwargs})


def test_registration_covers_the_suite():
    assert set(ENV_IDS) == {
        "fastvla/ReachCube-v0",
        "fastvla/PickCube-v0",
        "fastvla/PlaceCube-v0",
        "fastvla/PushCube-v0",
        "fastvla/StackCube-v0",
    }
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps and spec.max_episode_steps <= 200
        assert spec.entry_point.startswith("fastvla.envs.")
    assert fastvla.envs.TASKS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id):
    env = make(env_id, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", ["fastvla/ReachCube-v0", "fastvla/StackCube-v0"])
def test_same_seed_same_episode_including_images(env_id):
    def rollout(seed):
        env = make(env_id, expert_noise=0.2, depth=True)
        obs, info = env.reset(seed=seed)
        frames = [obs]
        tasks = [info["task"]]
        for _ in range(6):
            obs, _, _, _, info = env.step(env.unwrapped.expert_action())
            frames.append(obs)
            tasks.append(info["task"])
        env.close()
        return frames, tasks

    a, ta = rollout(3)
    b, tb = rollout(3)
    c, _ = rollout(4)
    assert ta == tb
    for x, y in zip(a, b):
        for cam in x["pixels"]:
            np.testing.assert_array_equal(x["pixels"][cam], y["pixels"][cam])
            np.testing.assert_array_equal(x["depth"][cam], y["depth"][cam])
        np.testing.assert_array_equal(x["agent_pos"], y["agent_pos"])
    assert not np.array_equal(a[0]["pixels"]["front"], c[0]["pixels"]["front"])


def test_observation_contract_and_instruction():
    env = make("fastvla/PickCube-v0", cameras=("front", "side", "wrist"), image_size=(24, 40), depth=True)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"pixels", "depth", "agent_pos"}
    for cam in ("front", "side", "wrist"):
        assert obs["pixels"][cam].shape == (24, 40, 3) and obs["pixels"][cam].dtype == np.uint8
        assert obs["depth"][cam].shape == (24, 40) and obs["depth"][cam].dtype == np.float32
        assert obs["pixels"][cam].std() > 5  # not a blank frame
    assert obs["agent_pos"].shape == (8,) and obs["agent_pos"].dtype == np.float32
    assert 0.07 < obs["agent_pos"][-1] <= 0.08  # gripper starts open (metres between the pads)
    color = env.unwrapped.colors[0]
    assert color in info["task"] and info["task"] == env.unwrapped.task_description
    assert isinstance(info["is_success"], bool) and not info["is_success"]
    assert "reward_reach" in info
    env.close()


def test_ee_pos_obs_is_optional_extra_key():
    env = make("fastvla/ReachCube-v0", cameras=("front",), ee_pos_obs=True)
    obs, _ = env.reset(seed=0)
    assert obs["ee_pos"].shape == (3,)
    np.testing.assert_allclose(obs["ee_pos"], env.unwrapped.physics.tcp_pos, atol=1e-6)
    env.close()


def test_num_distractors_changes_the_visible_cubes():
    env0 = make("fastvla/ReachCube-v0", num_distractors=0, cameras=("front",), image_size=64)
    env3 = make("fastvla/ReachCube-v0", num_distractors=3, cameras=("front",), image_size=64)
    env0.reset(seed=1)
    env3.reset(seed=1)
    assert len(env0.unwrapped.colors) == 1 and len(env3.unwrapped.colors) == 4
    with pytest.raises(ValueError, match="num_distractors"):
        make("fastvla/ReachCube-v0", num_distractors=9)


def test_bad_actions_raise_and_out_of_range_is_clipped():
    env = make("fastvla/ReachCube-v0", cameras=("front",))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([0, np.nan, 0, 0, 0, 0, 1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.inf, 0, 0, 0, 0, 0, 1.0]))
    z0 = env.unwrapped.physics.tcp_pos[2]
    env.step(np.array([0, 0, -50.0, 0, 0, 0, 1.0]))  # clipped to one unit = 5 cm down
    assert 0.035 < z0 - env.unwrapped.physics.tcp_pos[2] < 0.06
    with pytest.raises(ValueError, match="control_mode"):
        make("fastvla/ReachCube-v0", control_mode="torque")
    with pytest.raises(ValueError, match="camera"):
        make("fastvla/ReachCube-v0", cameras=("top",))
    env.close()


def test_joint_pos_mode_tracks_targets():
    env = make("fastvla/ReachCube-v0", control_mode="joint_pos", cameras=("front",))
    env.reset(seed=0)
    assert env.action_space.shape == (8,)
    target = env.unwrapped.physics.home_qpos + np.array([0.2, 0.1, 0.0, 0.1, 0.0, -0.1, 0.3])
    for _ in range(3):
        obs, *_ = env.step(np.append(target, -1.0).astype(np.float32))
    np.testing.assert_allclose(obs["agent_pos"][:7], target, atol=0.02)
    assert obs["agent_pos"][7] < 0.01  # closed
    env.close()


def test_depth_is_metres():
    """Centre pixel of the depth image equals the ray distance to the first surface along the axis."""
    import mujoco

    env = make(
        "fastvla/ReachCube-v0", cameras=("front", "wrist"), image_size=33, depth=True, num_distractors=0
    )
    obs, _ = env.reset(seed=0)
    phys = env.unwrapped.physics
    for cam in ("front", "wrist"):
        cam_data = phys.data.cam(cam)
        axis = -cam_data.xmat.reshape(3, 3)[:, 2]  # cameras look along -z
        geomid = np.zeros(1, dtype=np.int32)
        dist = mujoco.mj_ray(phys.model, phys.data, cam_data.xpos, axis, None, 1, -1, geomid)
        assert 0.1 < dist < 3.0
        assert obs["depth"][cam][16, 16] == pytest.approx(dist, rel=0.02)
    # The wrist camera at home sees the table about 0.4-0.6 m below.
    assert 0.3 < float(np.median(obs["depth"]["wrist"])) < 0.8
    env.close()


EXPERT_SEEDS = {
    "fastvla/ReachCube-v0": range(4),
    "fastvla/PickCube-v0": range(3),
    "fastvla/PlaceCube-v0": range(3),
    "fastvla/PushCube-v0": range(3),
    "fastvla/StackCube-v0": range(3),
}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_scripted_expert_succeeds(env_id):
    env = make(env_id, cameras=("front",), image_size=16)
    for seed in EXPERT_SEEDS[env_id]:
        env.reset(seed=seed)
        success = False
        for _ in range(env.spec.max_episode_steps):
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            success |= info["is_success"]
            if terminated or truncated:
                break
        assert success, f"{env_id} expert failed on seed {seed}"
    env.close()


def test_expert_in_joint_pos_mode_and_with_noise():
    env = make("fastvla/PickCube-v0", control_mode="joint_pos", expert_noise=0.3, cameras=("front",))
    env.reset(seed=11)
    for _ in range(env.spec.max_episode_steps):
        action = env.unwrapped.expert_action()
        assert action.dtype == np.float32 and env.action_space.contains(action)
        *_, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info["is_success"]
    env.close()


def test_env_pickles_for_worker_processes():
    import pickle

    env = make("fastvla/PushCube-v0", cameras=("side",), num_distractors=0)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    a, _ = env.reset(seed=2)
    b, _ = clone.reset(seed=2)
    assert clone.cameras == ("side",) and clone.num_distractors == 0
    np.testing.assert_array_equal(a["pixels"]["side"], b["pixels"]["side"])
    env.close()
    clone.close()
