"""FastVLAPolicy: observation maps, chunk execution, batches, errors, and driving real envs."""

from __future__ import annotations

import copy
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from fastvla.model import FastVLAModel, FastVLAProcessor
from fastvla.policies import FastVLAPolicy, ObservationMap, TemporalEnsembler


def save_tiny(path, cameras, state_dim, action_dim, image_size=64, chunk_size=8, low=-1.0, high=1.0):
    torch.manual_seed(0)
    kw = {"cameras": cameras, "state_dim": state_dim, "action_dim": action_dim, "chunk_size": chunk_size}
    model = FastVLAModel.from_preset("tiny", image_size=image_size, **kw)
    stats = {
        "observation.state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"min": [low] * action_dim, "max": [high] * action_dim},
    }
    proc = FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


class CountingModel(torch.nn.Module):
    """Wraps a model to count forwards (receding horizon re-plans only when the queue runs dry)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.calls = model, model.config, 0

    def forward(self, **kw):
        self.calls += 1
        return self.inner(**kw)


class ToyArmEnv(gym.Env):
    """A plain Gymnasium env with its own key names: sensors/cam_top (48x48), joints (5,), 3-D actions."""

    def __init__(self):
        self.observation_space = spaces.Dict(
            {
                "sensors": spaces.Dict({"cam_top": spaces.Box(0, 255, (48, 48, 3), np.uint8)}),
                "joints": spaces.Box(-np.inf, np.inf, (5,), np.float32),
            }
        )
        self.action_space = spaces.Box(-0.5, 0.5, (3,), np.float32)
        self.pos = np.zeros(5, np.float32)

    def _obs(self):
        img = np.zeros((48, 48, 3), np.uint8)
        img[..., 0] = int(127 + 100 * np.tanh(self.pos[0]))
        return {"sensors": {"cam_top": img}, "joints": self.pos.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.normal(size=5).astype(np.float32)
        return self._obs(), {"task": "move the arm up"}

    def step(self, action):
        assert self.action_space.contains(action.astype(np.float32)), action
        self.pos[:3] += action
        return self._obs(), 0.0, False, False, {"task": "move the arm up"}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("toy"), ["top"], 5, 3, low=-0.5, high=0.5)


def toy_map(**kw) -> ObservationMap:
    return ObservationMap(cameras={"top": "sensors/cam_top"}, state="joints", **kw)


def test_plain_gym_env_with_other_keys(toy_dir) -> None:
    env = ToyArmEnv()
    policy = FastVLAPolicy.from_pretrained(
        toy_dir,
        obs_map=toy_map(instruction="move the arm up"),
        n_action_steps=3,
        action_space=env.action_space,
    )
    policy.model = CountingModel(policy.model)
    obs, _ = env.reset(seed=0)
    policy.reset()
    for _ in range(7):
        before = copy.deepcopy(obs)
        action = policy.select_action(obs)  # instruction from the map's default
        assert action.shape == (3,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 0.5)
        np.testing.assert_array_equal(obs["sensors"]["cam_top"], before["sensors"]["cam_top"])
        np.testing.assert_array_equal(obs["joints"], before["joints"])
        obs, *_ = env.step(action)
    assert policy.model.calls == 3  # steps 0, 3, 6 re-plan


def test_receding_horizon_executes_chunk_in_order(toy_dir) -> None:
    env = ToyArmEnv()
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(), n_action_steps=4)
    obs, info = env.reset(seed=1)
    chunk = policy.predict_action_chunk(obs, task=info["task"])
    assert chunk.shape == (8, 3)
    policy.reset()
    actions = [policy.select_action(obs, task=info["task"]) for _ in range(4)]
    np.testing.assert_allclose(np.stack(actions), chunk[:4], rtol=1e-5, atol=1e-6)


def test_vector_batch_and_per_env_tasks(toy_dir) -> None:
    env = gym.vector.SyncVectorEnv([ToyArmEnv, ToyArmEnv])
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(), n_action_steps=2)
    obs, info = env.reset(seed=[0, 1])
    policy.reset()
    action = policy.select_action(obs, task=info["task"])
    assert action.shape == (2, 3)
    single = {"sensors": {"cam_top": obs["sensors"]["cam_top"][1]}, "joints": obs["joints"][1]}
    chunk = policy.predict_action_chunk(single, task="move the arm up")
    batch_chunk = policy.predict_action_chunk(obs, task=list(info["task"]))
    np.testing.assert_allclose(batch_chunk[1], chunk, rtol=1e-4, atol=1e-5)
    obs, *_ = env.step(action)
    assert policy.select_action(obs, task=info["task"]).shape == (2, 3)


def test_temporal_ensembling_matches_reference() -> None:
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(6, 1, 4, 2))  # 6 steps, batch 1, chunk 4, action 2
    coeff = 0.3
    ens = TemporalEnsembler(coeff, 4)
    for t in range(6):
        got = ens.update(chunks[t])
        # actions predicted for step t by the chunks of steps max(0, t-3)..t, oldest first
        preds = [chunks[s][0, t - s] for s in range(max(0, t - 3), t + 1)]
        w = np.exp(-coeff * np.arange(len(preds)))
        np.testing.assert_allclose(got[0], (w[:, None] * np.stack(preds)).sum(0) / w.sum(), rtol=1e-5)


def test_temporal_ensembling_policy(toy_dir) -> None:
    env = ToyArmEnv()
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(), temporal_ensemble_coeff=0.01)
    policy.model = CountingModel(policy.model)
    obs, info = env.reset(seed=0)
    first = policy.predict_action_chunk(obs, task=info["task"])[0]
    policy.model.calls = 0
    np.testing.assert_allclose(policy.select_action(obs, task=info["task"]), first, rtol=1e-5, atol=1e-6)
    policy.select_action(obs, task=info["task"])
    assert policy.model.calls == 2  # predicts every step
    with pytest.raises(ValueError, match="n_action_steps must be 1"):
        FastVLAPolicy.from_pretrained(
            toy_dir, obs_map=toy_map(), temporal_ensemble_coeff=0.01, n_action_steps=4
        )


def test_clear_errors(toy_dir) -> None:
    env = ToyArmEnv()
    obs, _ = env.reset(seed=0)
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map())
    missing_camera = r"camera 'top' not in observation: no key 'sensors/cam_top'; available: \['joints'\]"
    with pytest.raises(KeyError, match=missing_camera):
        policy.select_action({"joints": obs["joints"], "sensors": {}}, task="x")
    with pytest.raises(KeyError, match="state not in observation"):
        policy.select_action({"sensors": obs["sensors"]}, task="x")
    with pytest.raises(ValueError, match="no instruction"):
        policy.select_action(obs)
    with pytest.raises(ValueError, match=r"\(48, 48\).*trained on \(64, 64\)"):
        FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(), resize_images=False).select_action(
            obs, task="x"
        )
    with pytest.raises(ValueError, match="predicts 3-dimensional actions"):
        FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(), action_space=spaces.Box(-1, 1, (7,)))
    with pytest.raises(ValueError, match="do not match the model's cameras"):
        FastVLAPolicy.from_pretrained(toy_dir, obs_map=ObservationMap(cameras={"front": "sensors/cam_top"}))


def test_save_pretrained_keeps_obs_map(toy_dir, tmp_path) -> None:
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(instruction="lift"), n_action_steps=2)
    policy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "policy_config.json").read_text())["obs_map"]["state"] == "joints"
    again = FastVLAPolicy.from_pretrained(tmp_path)
    assert again.obs_map == policy.obs_map and again.n_action_steps == 2


def test_instruction_read_from_the_observation_or_named_info_key(toy_dir) -> None:
    obs, info = ToyArmEnv().reset(seed=2)
    expected = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map()).predict_action_chunk(
        obs, task=info["task"]
    )
    from_obs = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(instruction="obs:lang/text"))
    chunk = from_obs.predict_action_chunk({**obs, "lang": {"text": "move the arm up"}})
    np.testing.assert_allclose(chunk, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match=r"instruction not in observation.*available: \['sensors/cam_top'"):
        from_obs.select_action(obs)
    from_info = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(instruction="info:goal_text"))
    with pytest.raises(ValueError, match=r"pass task=info\['goal_text'\] to select_action"):
        from_info.select_action(obs)
    np.testing.assert_allclose(from_info.predict_action_chunk(obs, task=info["task"]), expected, rtol=1e-5)


def test_drives_fastvla_env(tmp_path) -> None:
    import fastvla.envs  # noqa: F401  (registers the ids)

    env = gym.make("fastvla/ReachCube-v0", cameras=("front", "wrist"), image_size=64)
    try:
        obs, info = env.reset(seed=0)
        state_dim, action_dim = obs["agent_pos"].shape[0], env.action_space.shape[0]
        path = save_tiny(tmp_path, ["front", "wrist"], state_dim, action_dim)
        policy = FastVLAPolicy.from_pretrained(path, n_action_steps=4, action_space=env.action_space)
        policy.reset()
        for _ in range(6):
            action = policy.select_action(obs, task=info["task"])
            assert env.action_space.contains(action)
            obs, _, _, _, info = env.step(action)
            assert isinstance(info["task"], str)
    finally:
        env.close()


def test_cuda_graphs_option_is_checked_on_cpu() -> None:
    from fastvla.model import FastVLAModel, FastVLAProcessor

    model = FastVLAModel.from_preset("tiny", image_size=32)
    processor = FastVLAProcessor.from_preset("tiny", config=model.config)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        FastVLAPolicy(model, processor, device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs must be"):
        FastVLAPolicy(model, processor, device="cpu", cuda_graphs="yes")
    with pytest.raises(ValueError, match="kernels=True needs a CUDA device"):
        FastVLAPolicy(model, processor, device="cpu", kernels=True)
    policy = FastVLAPolicy(model, processor, device="cpu")
    assert policy._graphed is None and policy.kernel_patch is None  # auto: neither on CPU


@pytest.mark.parametrize(
    ("key", "bad", "named"),
    [
        ("joints", np.nan, "state 'joints'"),
        ("joints", -np.inf, "state 'joints'"),
        ("cam_top", np.nan, "camera 'top' ('sensors/cam_top')"),
        ("cam_top", np.inf, "camera 'top' ('sensors/cam_top')"),
    ],
)
def test_nonfinite_observation_is_named(toy_dir, key: str, bad: float, named: str) -> None:
    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(instruction="lift"))
    policy.model = CountingModel(policy.model)
    obs, _ = ToyArmEnv().reset(seed=0)
    obs["sensors"]["cam_top"] = obs["sensors"]["cam_top"].astype(np.float32) / 255  # float images are allowed
    assert policy.select_action(obs).shape == (3,)
    policy.reset()
    target = obs["joints"] if key == "joints" else obs["sensors"]["cam_top"]
    target.flat[3] = bad
    with pytest.raises(ValueError, match=re.escape(named) + " holds NaN or inf values"):
        policy.select_action(obs)
    assert policy.model.calls == 1  # refused before the model ran


def test_nonfinite_prediction_is_an_error(toy_dir) -> None:
    from fastvla.errors import NonFiniteError

    policy = FastVLAPolicy.from_pretrained(toy_dir, obs_map=toy_map(instruction="lift"))
    obs, _ = ToyArmEnv().reset(seed=0)
    with torch.no_grad():
        next(p for n, p in policy.model.named_parameters() if "action_head" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="predicted NaN/inf actions"):
        policy.predict_action_chunk(obs)
