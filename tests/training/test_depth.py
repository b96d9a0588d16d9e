"""Depth end to end: record depth maps from an env, read them back, train a depth model, run it on the env."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("fastvla.envs")

from fastvla.datasets import LeRobotDataset
from fastvla.datasets.recorder import record

ENV = "fastvla/ReachCube-v0"
CAMERAS = ("front", "wrist")


@pytest.fixture(scope="module")
def depth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two expert episodes of ReachCube with RGB and depth of both cameras at 32x32."""
    out = tmp_path_factory.mktemp("depth") / "reach"
    summary = record(
        ENV, out, episodes=2, cameras=CAMERAS, image_size=32, num_envs=1, depth=True, progress=False
    )
    assert summary.episodes_saved == 2
    return out


def test_depth_is_recorded_as_uint16_millimetres(depth_dataset: Path) -> None:
    import gymnasium as gym

    ds = LeRobotDataset(depth_dataset)
    feature = ds.meta.features["observation.depth.front"]
    assert feature["dtype"] == "uint16" and list(feature["shape"]) == [32, 32]
    assert ds.meta.camera_keys == ["observation.images.front", "observation.images.wrist"]  # not a camera
    stats = ds.meta.stats["observation.depth.front"]
    assert np.asarray(stats["mean"]).shape == (1, 1, 1)  # one number per map, not 32 x 32
    # frame 0 is env.reset(seed=0): the stored map is the rendered one in millimetres
    env = gym.make(ENV, cameras=CAMERAS, image_size=32, depth=True)
    obs, _ = env.reset(seed=0)
    env.close()
    stored = np.asarray(ds.columns["observation.depth.front"][0])
    assert stored.dtype == np.uint16 and stored.shape == (32, 32)
    np.testing.assert_allclose(stored / 1000.0, obs["depth"]["front"], atol=5e-4)
    assert 0.05 < stored.mean() / 1000.0 < 5.0  # metres of a tabletop scene


def test_nested_list_layout_matches_lerobot_array2d(depth_dataset: Path) -> None:
    """lerobot types a 2-D feature as ``datasets.Array2D``: nested lists plus that schema metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = next((depth_dataset / "data").rglob("*.parquet"))
    schema = pq.read_schema(path)
    column = schema.field("observation.depth.wrist").type  # list<list<uint16>>: rows of a map
    assert pa.types.is_list(column) and pa.types.is_list(column.value_type)
    assert column.value_type.value_type == pa.uint16()
    hf = json.loads(schema.metadata[b"huggingface"])["info"]["features"]["observation.depth.wrist"]
    assert hf == {"shape": [32, 32], "dtype": "uint16", "_type": "Array2D"}


def test_training_dataset_serves_depth_in_metres(depth_dataset: Path, tmp_path: Path) -> None:
    from fastvla.datasets.training import TrainingDataset

    ds = TrainingDataset(depth_dataset, list(CAMERAS), 16, chunk_size=4, cache_dir=tmp_path, depth=True)
    sample = ds[0]
    depth = sample["observation.depth.wrist"]
    assert depth.shape == (1, 16, 16) and depth.dtype.is_floating_point
    full = np.asarray(LeRobotDataset(depth_dataset).columns["observation.depth.wrist"][0]) / 1000.0
    np.testing.assert_allclose(depth[0].numpy(), full[::2, ::2], atol=1e-6)  # nearest resize
    rgb_only = TrainingDataset(depth_dataset, list(CAMERAS), 16, chunk_size=4, cache_dir=tmp_path)
    assert "observation.depth.wrist" not in rgb_only[0] and rgb_only.cache_path != ds.cache_path


def test_train_a_depth_model_and_run_it_on_the_env(depth_dataset: Path, tmp_path: Path) -> None:
    import gymnasium as gym
    import torch

    from fastvla.policies import FastVLAPolicy
    from fastvla.training import DataConfig, OptimConfig, TrainConfig, train

    cfg = TrainConfig(
        data=DataConfig(root=str(depth_dataset), image_size=32, depth=True, val_fraction=0.0, chunk_size=4),
        optim=OptimConfig(warmup_steps=0),
        output_dir=str(tmp_path / "run"),
        steps=4,
        batch_size=4,
        device="cpu",
        save_every=0,
        val_every=0,
        tensorboard=False,
        progress=False,
        log_every=1,
    )
    policy_dir = train(cfg)
    policy = FastVLAPolicy.from_pretrained(policy_dir, device="cpu")
    assert policy.model.config.use_depth
    stem = policy.model.vision.depth_embed.weight
    assert stem.abs().sum() > 0  # zero-initialised, so non-zero means depth reached it through training
    env = gym.make(ENV, cameras=CAMERAS, image_size=32, depth=True)
    obs, info = env.reset(seed=5)
    with torch.no_grad():
        action = policy.select_action(obs, task=info["task"])
    env.close()
    assert action.shape == (7,) and np.isfinite(action).all()


def test_depth_flag_on_a_dataset_without_depth_is_a_clear_error(tiny_dataset: Path) -> None:
    from fastvla.datasets.training import LeRobotTrainingData
    from fastvla.training import DataConfig

    with pytest.raises(ValueError, match=r"no depth for camera\(s\) \['front', 'wrist'\]"):
        LeRobotTrainingData().inspect(DataConfig(root=str(tiny_dataset), depth=True), 0)
