"""The bridge drives a real (tiny, untrained) FastVLAPolicy, loaded as `fastvla ros2 --policy DIR` does."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastvla.model import FastVLAModel, FastVLAProcessor  # noqa: E402
from fastvla.ros2 import cli  # noqa: E402
from fastvla.ros2 import msgs as M  # noqa: E402
from fastvla.ros2.bridge import BridgeConfig, PolicyBridge  # noqa: E402
from fastvla.ros2.images import rgb_to_image  # noqa: E402
from fastvla.ros2.transport import InProcessTransport  # noqa: E402

CAMS, STATE_DIM, ACTION_DIM, CHUNK = ["front", "wrist"], 8, 8, 6


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_policy")
    kw = {"cameras": CAMS, "state_dim": STATE_DIM, "action_dim": ACTION_DIM, "chunk_size": CHUNK}
    model = FastVLAModel.from_preset("tiny", image_size=64, **kw)
    stats = {
        "observation.state": {"mean": [0.0] * STATE_DIM, "std": [1.0] * STATE_DIM},
        "action": {"min": [-1.0] * ACTION_DIM, "max": [1.0] * ACTION_DIM},
    }
    FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats).save_pretrained(path)
    model.save_pretrained(path)
    return path


def run(policy, command_type: str, image_size: int = 96):
    bus = InProcessTransport()
    cfg = BridgeConfig(
        cameras={c: f"/{c}/image_raw" for c in CAMS},
        command_topic="/cmd",
        instruction="pick up the red cube",
        command_type=command_type,
        max_staleness=30.0,  # this test is about the policy; a loaded 2-core CI box can take ~1 s per call
    )
    bridge = PolicyBridge(policy, bus, cfg)
    got: list[M.Message] = []
    bus.subscribe(
        "/cmd",
        M.Float64MultiArray if command_type == "float64_multi_array" else M.JointTrajectory,
        got.append,
    )
    rng = np.random.default_rng(0)
    names = [f"j{i}" for i in range(STATE_DIM)]
    for _ in range(2):
        for cam in CAMS:  # a camera resolution other than the model's: the policy resizes
            rgb = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
            bus.publisher(f"/{cam}/image_raw", M.Image).publish(rgb_to_image(rgb))
        state = M.JointState(name=names, position=np.zeros(STATE_DIM))
        bus.publisher("/joint_states", M.JointState).publish(state)
        assert bridge.tick(), bridge._paused_reason
    return got


def test_float64_multi_array_from_fastvla_policy(policy_dir) -> None:
    policy = cli.load_policy(str(policy_dir), CAMS, "pick up the red cube", "cpu")
    got = run(policy, "float64_multi_array")
    assert len(got) == 2
    for cmd in got:
        assert cmd.data.shape == (ACTION_DIM,) and np.isfinite(cmd.data).all()
        assert np.all(np.abs(cmd.data) <= 1.0 + 1e-5)  # un-normalised into the action stats' [min, max]


def test_joint_trajectory_carries_the_model_chunk(policy_dir) -> None:
    policy = cli.load_policy(str(policy_dir), CAMS, "pick up the red cube", "cpu")
    traj = run(policy, "joint_trajectory")[-1]
    assert len(traj.points) == CHUNK
    assert traj.joint_names == [f"j{i}" for i in range(ACTION_DIM)]
    assert all(p.positions.shape == (ACTION_DIM,) for p in traj.points)
    assert traj.points[-1].time_from_start.to_sec() == pytest.approx(CHUNK * 0.1)


def test_camera_names_must_match_the_model(policy_dir) -> None:
    with pytest.raises(ValueError, match=r"do not match the model's cameras \['front', 'wrist'\]"):
        cli.load_policy(str(policy_dir), ["front", "side"], "x", "cpu")
