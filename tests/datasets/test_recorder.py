"""The expert recorder on FastVLA envs: frames are (observation, expert action, instruction) triples."""

from __future__ import annotations

import numpy as np
import pytest

import fastvla.envs  # noqa: F401  (registers the ids)
from fastvla.cli import main
from fastvla.datasets import LeRobotDataset
from fastvla.datasets.recorder import SEED_BLOCK, next_free_seed, record, recorded_obs_map

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
    assert recorded_obs_map(out) is None  # FastVLA env keys: a trained policy needs no map


def test_any_env_through_an_observation_map(tmp_path):
    """Cameras picked from the map, the expert a callable, task and success from the map's sources."""
    obs_map = {
        "cameras": {"cam": "pixels/front", "hand": "pixels/wrist"},
        "state": "agent_pos",
        "success": "terminated",  # no instruction source: info["task"]
    }
    seen = []

    def expert(env, obs, info):
        seen.append(info["task"])
        return env.unwrapped.expert_action()

    out, env_kwargs = tmp_path / "toy", {"image_size": 16}
    summary = record("fastvla.eval.toy:ToyReachEnv", out, episodes=2, num_envs=1, obs_map=obs_map,
                     cameras=["hand"], expert=expert, env_kwargs=env_kwargs, progress=False)  # fmt: skip
    assert summary.complete and seen
    ds = LeRobotDataset(out)
    assert [k for k in ds.meta.features if k.startswith("observation.images")] == ["observation.images.hand"]
    assert ds.meta.features["observation.state"]["names"] == ["state_0", "state_1", "state_2", "state_3"]
    assert ds.meta.features["action"]["shape"] == [2]
    saved = recorded_obs_map(out)
    assert saved["cameras"] == {"hand": "pixels/wrist"} and saved["instruction"] is None
    from fastvla.eval.toy import ToyReachEnv

    obs, info = ToyReachEnv(**env_kwargs).reset(seed=0)
    item = ds[0]
    assert item["task"] == info["task"] == seen[0]
    np.testing.assert_array_equal(item["observation.state"].numpy(), obs["agent_pos"])
    with pytest.raises(KeyError, match=r"camera\(s\) \['side'\] not in the observation map"):
        record("fastvla.eval.toy:ToyReachEnv", tmp_path / "x", 1, obs_map=obs_map, cameras=["side"])
    with pytest.raises(ValueError, match="map depth paths instead"):
        record("fastvla.eval.toy:ToyReachEnv", tmp_path / "y", 1, obs_map=obs_map, depth=True)


@pytest.mark.slow
def test_record_cli_async_workers_and_append(tmp_path, capsys):
    out = tmp_path / "reach"
    argv = ["record", "--env", ENV, "--episodes", "3", "--cameras", "front,wrist", "--out", str(out)]
    assert main([*argv, "--image-size", "32", "--num-envs", "2"]) == 0
    text = capsys.readouterr().out
    assert ENV in text and "3 / 3" in text
    _replay_first_frames(out)
    assert main([*argv, "--image-size", "32", "--num-envs", "2", "--episodes", "1", "--seed", "100"]) == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4
    assert sorted(set(ds.columns["episode_index"].tolist())) == [0, 1, 2, 3]


def _first_images(root) -> list:
    ds = LeRobotDataset(root)
    starts = ds.episode_starts
    return [ds[int(s)]["observation.images.front"].numpy() for s in starts]


def test_appending_without_seed_records_new_episodes(tmp_path):
    """Re-running the same recording continues the seed sequence instead of repeating episodes."""
    out = tmp_path / "reach"
    first = record(ENV, out, episodes=2, image_size=32, num_envs=1, progress=False)
    again = record(ENV, out, episodes=2, image_size=32, num_envs=1, progress=False)
    assert first.seed == 0 and again.seed == SEED_BLOCK
    assert next_free_seed(out) == 2 * SEED_BLOCK
    images = _first_images(out)
    assert len(images) == 4
    # Episode 2 (the append's first) starts from another scene than episode 0 (same seed would repeat it).
    assert np.abs(images[2] - images[0]).mean() > 0.01
    fresh = record(ENV, tmp_path / "fresh", episodes=1, image_size=32, num_envs=1, progress=False, seed=0)
    assert np.abs(_first_images(tmp_path / "fresh")[0] - images[0]).mean() < 0.02  # seed 0 is reproducible
    assert fresh.seed == 0


def test_multi_task_recording_is_balanced_with_task_per_episode(tmp_path, capsys):
    out = tmp_path / "suite"
    envs = ["fastvla/ReachCube-v0", "fastvla/PushCube-v0"]
    colors = '{"instruction_colors": ["red", "blue"]}'
    argv = ["record", "--env", *envs, "--episodes-per-env", "2", "--image-size", "32", "--num-envs", "1"]
    assert main([*argv, "--env-kwargs", colors, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(e in text for e in envs), text
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4
    from fastvla.envs import push_cube, reach_cube

    def instructions(module) -> set[str]:
        return {t.format(color=c) for t in module.TEMPLATES for c in ("red", "blue")}

    tasks = [ds[int(s)]["task"] for s in ds.episode_starts]
    assert set(tasks[:2]) <= instructions(reach_cube), tasks
    assert set(tasks[2:]) <= instructions(push_cube), tasks


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
        seed=0,  # the replay below starts from seed 0 (an append would otherwise continue the seeds)
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
