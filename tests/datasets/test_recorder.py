"""The expert recorder on FastVLA envs: frames are (observation, expert action, instruction) triples."""

from __future__ import annotations

import numpy as np
import pytest

import fastvla.envs  # noqa: F401  (registers the ids)
from fastvla.cli import main
from fastvla.datasets import LeRobotDataset
from fastvla.datasets.recorder import record

ENV = "fastvla/ReachCube-v0"


def _replay_first_frames(root, seed=0):
    """The first frame of episode 0 must be env(seed).reset() and its expert action."""
    import gymnasium as gym

    env = gym.make(ENV, cameras=("front", "wrist"), image_size=32)
    obs, info = env.reset(seed=seed)
    action = env.unwrapped.expert_action()
    env.close()
    item = LeRobotDataset(root)[0]
    assert item["task"] == info["task"]
    np.testing.assert_array_equal(item["observation.state"].numpy(), obs["agent_pos"])
    np.testing.assert_array_equal(item["action"].numpy(), action)
    img = (item["observation.images.front"].permute(1, 2, 0).numpy() * 255).astype(np.float32)
    assert np.abs(img - obs["pixels"]["front"]).mean() < 6.0  # h264 at 32x32


def test_record_sync_only_successes(tmp_path):
    out = tmp_path / "reach"
    summary = record(ENV, out, episodes=2, image_size=32, num_envs=1, progress=False)
    assert summary.complete and summary.episodes_saved == 2
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 2 and len(ds) == summary.frames_saved
    assert ds.meta.features["observation.state"]["shape"] == [8]
    assert ds.meta.features["observation.images.wrist"]["shape"] == [32, 32, 3]
    assert all(t for t in ds.meta.tasks)
    _replay_first_frames(out)
    # every saved episode ends in success: the expert's last action moves the arm onto the cube
    assert summary.successes >= 2


@pytest.mark.slow
def test_record_cli_async_workers_and_append(tmp_path, capsys):
    out = tmp_path / "reach"
    argv = ["record", "--env", ENV, "--episodes", "3", "--cameras", "front,wrist", "--out", str(out)]
    assert main([*argv, "--image-size", "32", "--num-envs", "2"]) == 0
    text = capsys.readouterr().out
    assert "episodes saved" in text and "3 / 3" in text
    _replay_first_frames(out)
    assert main([*argv, "--image-size", "32", "--num-envs", "2", "--episodes", "1", "--seed", "100"]) == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4
    assert sorted(set(ds.columns["episode_index"].tolist())) == [0, 1, 2, 3]


def test_record_keep_failed_with_short_episodes(tmp_path):
    # one-step episodes: the expert cannot succeed, so only --keep-failed saves anything
    out = tmp_path / "fail"
    summary = record(
        ENV,
        out,
        episodes=1,
        image_size=32,
        num_envs=1,
        progress=False,
        max_attempts=2,
        env_kwargs={"max_episode_steps": 1},
    )
    assert summary.episodes_saved == 0 and not summary.complete and summary.episodes_attempted == 2
    summary = record(
        ENV,
        out,
        episodes=2,
        image_size=32,
        num_envs=1,
        progress=False,
        keep_failed=True,
        env_kwargs={"max_episode_steps": 1},
    )
    assert summary.complete and summary.successes == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 2 and len(ds) == 2
    # the second episode starts from the autoreset observation, not the terminal one
    import gymnasium as gym

    env = gym.make(ENV, cameras=("front", "wrist"), image_size=32, max_episode_steps=1)
    env.reset(seed=0)
    env.step(env.unwrapped.expert_action())
    obs, info = env.reset()
    action = env.unwrapped.expert_action()
    env.close()
    second = ds[1]
    np.testing.assert_array_equal(second["observation.state"].numpy(), obs["agent_pos"])
    np.testing.assert_array_equal(second["action"].numpy(), action)
    assert second["task"] == info["task"]
