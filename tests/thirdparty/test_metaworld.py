"""Meta-World through FastVLA's wrappers: rendered cameras, seeding, the scripted expert, policy and eval."""

from __future__ import annotations

import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("metaworld", reason="pip install 'fastvla[metaworld]' in a separate venv")

from thirdparty_helpers import save_tiny_policy

from fastvla.envs.thirdparty import make_metaworld, metaworld_observation_map

pytestmark = pytest.mark.slow


def test_observation_instruction_and_seeding() -> None:
    env = make_metaworld("reach-v3", cameras=("corner2", "topview"), image_size=(32, 48))
    try:
        obs, info = env.reset(seed=1)
        assert env.observation_space.contains(obs)
        assert obs["pixels"]["corner2"].shape == (32, 48, 3) and obs["pixels"]["corner2"].std() > 5
        assert obs["agent_pos"].shape == (4,) and obs["environment_state"].shape == (39,)
        np.testing.assert_array_equal(obs["agent_pos"], obs["environment_state"][:4])
        assert info["task"] == "reach the goal position" and info["is_success"] is False
        assert env.get_wrapper_attr("task_description") == "reach the goal position"
        again, _ = env.reset(seed=1)
        other, _ = env.reset(seed=2)
        # Same seed, same goal variant and images; MT1 alone would draw the variant before seeding.
        np.testing.assert_array_equal(obs["environment_state"], again["environment_state"])
        np.testing.assert_array_equal(obs["pixels"]["topview"], again["pixels"]["topview"])
        assert not np.array_equal(obs["environment_state"][-3:], other["environment_state"][-3:])
        obs, *_, info = env.step(env.action_space.sample())
        assert isinstance(info["is_success"], bool) and env.observation_space.contains(obs)
    finally:
        env.close()


def test_upside_down_cameras_are_flipped() -> None:
    kwargs = {"cameras": ("corner2",), "image_size": 24}
    # Two instances: the same seed is the same episode in every process (fixed benchmark_seed).
    flipped, raw = make_metaworld("reach-v3", **kwargs), make_metaworld("reach-v3", flip=(), **kwargs)
    try:
        a, _ = flipped.reset(seed=0)
        b, _ = raw.reset(seed=0)
        np.testing.assert_array_equal(a["pixels"]["corner2"], b["pixels"]["corner2"][::-1, ::-1])
    finally:
        flipped.close()
        raw.close()


def test_scripted_expert_succeeds_and_registered_id() -> None:
    env = gym.make("fastvla.envs.thirdparty:fastvla/MetaWorld-v0", task="reach-v3", image_size=16)
    try:
        for seed in (0, 1):
            env.reset(seed=seed)
            for _ in range(150):
                *_, info = env.step(env.get_wrapper_attr("expert_action")())
                if info["is_success"]:
                    break
            assert info["is_success"], f"scripted reach failed for seed {seed}"
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown Meta-World task 'reach-v9'"):
        make_metaworld("reach-v9")
    with pytest.raises(ValueError, match=r"cameras \['nope'\] not in the model"):
        make_metaworld("reach-v3", cameras=("nope",))


def test_fastvla_policy_through_the_map_and_eval_video(tmp_path: Path) -> None:
    from fastvla import policies
    from fastvla.eval import evaluate

    path = save_tiny_policy(tmp_path / "policy", ["front", "side"], state_dim=4, action_dim=4)
    obs_map = metaworld_observation_map(
        "reach-v3", cameras=("corner2", "topview"), model_cameras=("front", "side")
    )
    assert obs_map.cameras == {"front": "pixels/corner2", "side": "pixels/topview"}
    factory = functools.partial(make_metaworld, "reach-v3", image_size=32, max_episode_steps=6)
    env = factory()
    policy = policies.FastVLAPolicy.from_pretrained(
        path, device="cpu", obs_map=obs_map, action_space=env.action_space
    )
    obs, _ = env.reset(seed=0)
    policy.reset()
    for _ in range(3):
        action = policy.select_action(obs)  # instruction from the map
        assert action.shape == (4,) and env.action_space.contains(action)
        obs, *_ = env.step(action)
    env.close()
    policy.reset()
    result = evaluate(
        policy,
        {"metaworld_reach": factory},
        n_episodes=1,
        out_dir=tmp_path / "eval",
        progress=False,
        vectorization="sync",
    )
    assert result.n_episodes == 1 and result.episodes[0].length == 6
    videos = sorted((tmp_path / "eval").rglob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_record_scripted_demonstrations_with_the_fastvla_recorder(tmp_path: Path) -> None:
    from fastvla.datasets import LeRobotDataset
    from fastvla.datasets.recorder import record

    summary = record(
        "fastvla.envs.thirdparty:fastvla/MetaWorld-v0",
        tmp_path / "demos",
        episodes=2,
        cameras=("corner2", "topview"),
        image_size=32,
        num_envs=1,
        env_kwargs={"task": "reach-v3", "terminate_on_success": True, "max_episode_steps": 150},
        progress=False,
    )
    assert summary.episodes_saved == 2 and summary.successes == 2
    dataset = LeRobotDataset(tmp_path / "demos")
    assert dataset.meta.total_episodes == 2 and dataset.meta.total_frames == summary.frames_saved
    assert dataset.meta.camera_keys == ["observation.images.corner2", "observation.images.topview"]
    item = dataset[0]
    assert item["observation.images.topview"].shape == (3, 32, 32) and item["action"].shape == (4,)
    assert item["task"] == "reach the goal position"


def test_depth_maps_flip_with_their_camera_and_map_to_model_cameras() -> None:
    kwargs = {"cameras": ("corner2", "topview"), "image_size": 24, "depth": True}
    flipped, raw = make_metaworld("reach-v3", **kwargs), make_metaworld("reach-v3", flip=(), **kwargs)
    try:
        a, _ = flipped.reset(seed=0)
        b, _ = raw.reset(seed=0)
        assert flipped.observation_space.contains(a)
        assert a["depth"]["topview"].shape == (24, 24) and a["depth"]["topview"].dtype == np.float32
        np.testing.assert_array_equal(a["depth"]["corner2"], b["depth"]["corner2"][::-1, ::-1])
        assert 0.1 < float(a["depth"]["topview"].mean()) < 10.0  # metres
    finally:
        flipped.close()
        raw.close()
    obs_map = metaworld_observation_map("reach-v3", model_cameras=("front", "side"), depth=True)
    assert obs_map.depth == {"front": "depth/corner2", "side": "depth/topview"}


def test_async_vector_eval_gets_a_picklable_spec() -> None:
    """MT1's own spec holds a lambda; evaluate() asks async workers for the spec."""
    import pickle

    from fastvla.eval import evaluate

    env = make_metaworld("reach-v3", image_size=16)
    assert (
        env.spec.id == "fastvla/MetaWorld-v0"
        and pickle.loads(pickle.dumps(env.spec)).kwargs["task"] == "reach-v3"
    )
    env.close()
    factory = functools.partial(make_metaworld, "reach-v3", image_size=16, max_episode_steps=5)
    result = evaluate(
        "scripted", {"reach": factory}, n_episodes=2, batch_size=2, vectorization="async", progress=False
    )
    assert result.n_episodes == 2
