"""A FastVLA checkpoint evaluated by path on a third-party-style env through its observation map."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from fastvla.eval import evaluate
from fastvla.eval.toy import ToyReachEnv
from fastvla.eval.video import count_frames


@pytest.mark.slow
def test_checkpoint_path_on_env_with_other_keys(tmp_path: Path) -> None:
    import torch

    from fastvla.model import FastVLAModel, FastVLAProcessor
    from fastvla.policies import FastVLAPolicy, ObservationMap

    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", cameras=["front"], state_dim=4, action_dim=2)
    stats = {
        "observation.state": {"mean": [0.0] * 4, "std": [1.0] * 4},
        "action": {"min": [-1.0] * 2, "max": [1.0] * 2},
    }
    processor = FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats)
    # The env calls its camera `cam_high` and its state `qpos` and gives no instruction in info.
    obs_map = ObservationMap(cameras={"front": "cam_high"}, state="qpos", instruction="reach the target")
    FastVLAPolicy(model, processor, obs_map=obs_map, n_action_steps=4, device="cpu").save_pretrained(
        tmp_path / "ckpt"
    )
    factory = functools.partial(
        ToyReachEnv,
        cameras=("cam_high",),
        flat_images=True,
        state_key="qpos",
        with_task=False,
        image_size=64,
        max_episode_steps=10,
    )
    out = tmp_path / "eval"
    kw = dict(
        n_episodes=3, max_videos=1, progress=False, vectorization="sync", policy_kwargs={"device": "cpu"}
    )
    result = evaluate(str(tmp_path / "ckpt"), factory, batch_size=2, out_dir=out, **kw)
    again = evaluate(str(tmp_path / "ckpt"), factory, batch_size=2, **kw)

    assert [e.task for e in result.episodes] == ["reach the target"] * 3  # from the observation map
    assert [(e.length, e.sum_reward) for e in result.episodes] == [
        (e.length, e.sum_reward) for e in again.episodes
    ]
    info = json.loads((out / "eval_info.json").read_text())
    assert info["meta"]["config"]["policy"] == str(tmp_path / "ckpt")
    assert info["overall"]["policy_ms_per_step"] > 0
    (video,) = result.video_paths
    assert video == "videos/ToyReachEnv/eval_episode_0.mp4"
    assert count_frames(out / video) == result.episodes[0].length + 1
