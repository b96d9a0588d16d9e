"""TrainingDataset's hindsight goal (``aux_goal``): the episode's last state minus the state now."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastvla.datasets import LeRobotDataset, TrainingDataset


def test_aux_goal_is_last_state_minus_state_on_a_lerobot_fixture(lerobot_fixtures: Path, tmp_path) -> None:
    ds = LeRobotDataset(lerobot_fixtures / "sim_2cam_video_v30")
    td = TrainingDataset(ds, ["front"], 16, 4, cache_dir=tmp_path, progress=False, aux_goal=True)
    states = np.asarray(ds.columns["observation.state"], np.float32)
    episodes = np.asarray(ds.columns["episode_index"])
    assert len(np.unique(episodes)) > 1
    for idx in range(len(td)):
        last = np.flatnonzero(episodes == episodes[idx])[-1]  # the episode's last frame
        goal = td[idx]["aux_goal"]
        assert goal.dtype == torch.float32 and goal.shape == (states.shape[1],)
        np.testing.assert_array_equal(goal.numpy(), states[last] - states[idx])
        if idx == last:
            assert not goal.any()


def test_aux_goal_respects_the_episode_selection(make_dataset, tmp_path) -> None:
    root = make_dataset((6, 5, 7))
    td = TrainingDataset(
        LeRobotDataset(root, episodes=[2]), None, 16, 2, cache_dir=tmp_path, progress=False, aux_goal=True
    )
    # frame_values: state = base + episode + 0.01 * step, so the goal of step t is 0.01 * (6 - t)
    for t in range(7):
        np.testing.assert_allclose(td[t]["aux_goal"].numpy(), np.full(4, 0.01 * (6 - t)), atol=1e-6)


def test_no_aux_goal_by_default(make_dataset, tmp_path) -> None:
    td = TrainingDataset(make_dataset((4,)), None, 16, 2, cache_dir=tmp_path, progress=False)
    assert "aux_goal" not in td[0]
