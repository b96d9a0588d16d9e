"""Bridge logic over the in-process transport (messages still go through their CDR bytes)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from fastvla.ros2 import msgs as M
from fastvla.ros2.bridge import BridgeConfig, PolicyBridge
from fastvla.ros2.images import image_to_rgb, rgb_to_compressed, rgb_to_image
from fastvla.ros2.testing import FrameEchoPolicy, encode_frame_id, task_code
from fastvla.ros2.transport import InProcessTransport, resolve_topic

FRONT, WRIST, STATE, CMD = "/camera/front/image_raw", "/wrist/image_raw", "/joint_states", "/arm/commands"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(command_type: str = "float64_multi_array", **kw):
    clock, bus, policy = FakeClock(), InProcessTransport(), FrameEchoPolicy(chunk_size=3)
    cfg = BridgeConfig(
        cameras={"front": FRONT, "wrist": kw.pop("wrist_topic", WRIST)},
        state_topic=STATE,
        command_topic=CMD,
        instruction="pick up the red cube",
        command_type=command_type,
        max_staleness=0.5,
        **kw,
    )
    bridge = PolicyBridge(policy, bus, cfg, clock=clock)
    got: list[M.Message] = []
    cmd_type = M.Float64MultiArray if command_type == "float64_multi_array" else M.JointTrajectory
    bus.subscribe(CMD, cmd_type, got.append)
    return bridge, bus, policy, clock, got


def frame(frame_id: int, stamp_ns: int = 0, size: int = 8) -> M.Image:
    rgb = np.full((size, size, 3), 40, dtype=np.uint8)
    return rgb_to_image(encode_frame_id(rgb, frame_id), header=M.Header(stamp=M.Time.from_ns(stamp_ns)))


def joints(position=(0.1, 0.2, 0.3), names=("j1", "j2", "j3"), stamp_ns: int = 0) -> M.JointState:
    return M.JointState(header=M.Header(stamp=M.Time.from_ns(stamp_ns)), name=list(names), position=position)


def feed(bus, frame_id: int, stamp_ns: int = 0, **js) -> None:
    bus.publisher(FRONT, M.Image).publish(frame(frame_id, stamp_ns))
    bus.publisher(WRIST, M.Image).publish(frame(999, stamp_ns))
    bus.publisher(STATE, M.JointState).publish(joints(stamp_ns=stamp_ns, **js))


def test_paused_until_every_topic_arrives(caplog) -> None:
    bridge, bus, _, _, got = make()
    with caplog.at_level(logging.WARNING, logger="fastvla.ros2"):
        assert not bridge.tick()
    assert f"no message received yet on {FRONT}" in caplog.text
    bus.publisher(FRONT, M.Image).publish(frame(1))
    bus.publisher(WRIST, M.Image).publish(frame(2))
    assert not bridge.tick() and not got
    assert "no message received yet on /joint_states" in bridge._paused_reason
    bus.publisher(STATE, M.JointState).publish(joints())
    assert bridge.tick()
    assert len(got) == 1 and bridge.stats.published == 1 and bridge.stats.paused == 2


def test_command_comes_from_newest_observation_and_instruction() -> None:
    bridge, bus, _, _, got = make()
    feed(bus, 7)
    feed(bus, 8, position=(1.0, -2.0, 3.5))
    assert bridge.tick()
    cmd = got[-1]
    assert isinstance(cmd, M.Float64MultiArray)
    np.testing.assert_allclose(cmd.data, [8, task_code("pick up the red cube"), 1.0, -2.0, 3.5])
    assert [(d.label, d.size, d.stride) for d in cmd.layout.dim] == [("action", 5, 5)]


def test_stale_observation_pauses_and_resume_resets_policy(caplog) -> None:
    bridge, bus, policy, clock, got = make()
    feed(bus, 1)
    assert bridge.tick()
    resets = policy.resets
    clock.t += 0.6  # older than max_staleness=0.5
    with caplog.at_level(logging.WARNING, logger="fastvla.ros2"):
        assert not bridge.tick()
        assert not bridge.tick()
    assert caplog.text.count("commands paused: stale") == 1  # logged once, not every tick
    assert "last message 0.60 s ago (max 0.5 s)" in caplog.text
    assert len(got) == 1 and bridge.stats.pause_reasons["stale " + FRONT] == 2
    feed(bus, 2)
    assert bridge.tick() and got[-1].data[0] == 2
    assert policy.resets == resets + 1


def test_instruction_changes_at_run_time() -> None:
    bridge, bus, policy, _, got = make()
    feed(bus, 1)
    bridge.tick()
    topic = resolve_topic("~/instruction")
    assert topic == "/fastvla_bridge/instruction" == bridge.config.instruction_topic
    bus.publisher(topic, M.String).publish(M.String(data="open the drawer"))
    feed(bus, 2)
    assert bridge.tick()
    assert got[-1].data[1] == task_code("open the drawer") != got[0].data[1]
    assert policy.calls[-1] == (2, "open the drawer") and policy.resets >= 1


def test_unsynchronised_stamps_pause() -> None:
    bridge, bus, _, _, got = make()
    bus.publisher(FRONT, M.Image).publish(frame(1, stamp_ns=10_000_000_000))
    bus.publisher(WRIST, M.Image).publish(frame(1, stamp_ns=10_000_000_000))
    bus.publisher(STATE, M.JointState).publish(joints(stamp_ns=11_000_000_000))
    assert not bridge.tick() and not got
    assert bridge._paused_reason.startswith("unsynchronised: header stamps span 1.00 s")


def test_joint_trajectory_carries_the_chunk() -> None:
    bridge, bus, _, _, got = make("joint_trajectory", rate=20.0)
    feed(bus, 5, names=("shoulder", "elbow", "wrist"))
    assert bridge.tick()
    traj = got[-1]
    assert isinstance(traj, M.JointTrajectory) and len(traj.points) == 3
    # action dim 5 > 3 named joints: the rest are numbered
    assert traj.joint_names == ["shoulder", "elbow", "wrist", "joint_3", "joint_4"]
    assert [p.time_from_start.to_sec() for p in traj.points] == pytest.approx([0.05, 0.10, 0.15])
    np.testing.assert_allclose(traj.points[2].positions[0], 5.002)
    assert traj.header.stamp.to_ns() == 0  # "start now" for joint_trajectory_controller


def test_joint_names_select_and_order_state() -> None:
    bridge, bus, _, _, got = make(joint_names=("j3", "j1"))
    feed(bus, 1, position=(0.1, 0.2, 0.3))
    assert bridge.tick()
    np.testing.assert_allclose(got[-1].data[2:], [0.3, 0.1])
    feed(bus, 2, names=("j1", "j2", "x"))
    assert not bridge.tick()
    assert "joints ['j3'] missing from /joint_states" in bridge._paused_reason


def test_compressed_topic_is_decoded() -> None:
    bridge, bus, _, _, got = make(wrist_topic="/wrist/image_raw/compressed")
    rgb = encode_frame_id(np.zeros((6, 6, 3), np.uint8), 3)
    bus.publisher("/wrist/image_raw/compressed", M.CompressedImage).publish(rgb_to_compressed(rgb, fmt="png"))
    bus.publisher(FRONT, M.Image).publish(frame(4))
    bus.publisher(STATE, M.JointState).publish(joints())
    assert bridge.tick() and got[-1].data[0] == 4


def test_policy_error_pauses_without_publishing(caplog) -> None:
    bridge, bus, policy, _, got = make()
    policy.select_action = lambda obs, task=None: (_ for _ in ()).throw(RuntimeError("CUDA OOM"))
    feed(bus, 1)
    with caplog.at_level(logging.WARNING, logger="fastvla.ros2"):
        assert not bridge.tick()
    assert not got and bridge.stats.policy_errors == 1
    assert "policy error: RuntimeError: CUDA OOM" in caplog.text


def test_spin_keeps_the_rate() -> None:
    bus, policy = InProcessTransport(), FrameEchoPolicy()
    cfg = BridgeConfig(cameras={"front": FRONT}, state_topic=STATE, command_topic=CMD, rate=50.0)
    bridge = PolicyBridge(policy, bus, cfg)
    times: list[float] = []
    bus.subscribe(CMD, M.Float64MultiArray, lambda m: times.append(time.monotonic()))
    feed(bus, 1)
    t0 = time.monotonic()
    stats = bridge.spin(max_ticks=10)
    assert stats.ticks == 10 and stats.published == 10
    assert time.monotonic() - t0 == pytest.approx(9 / 50, abs=0.06)
    assert np.median(np.diff(times)) == pytest.approx(0.02, abs=0.005)


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="rate 0 Hz"):
        BridgeConfig(cameras={"f": FRONT}, rate=0)
    with pytest.raises(ValueError, match="command_type 'twist'"):
        BridgeConfig(cameras={"f": FRONT}, command_type="twist")
    with pytest.raises(ValueError, match="token '1cam'"):
        BridgeConfig(cameras={"f": "/1cam/image"})
    with pytest.raises(ValueError, match="no cameras"):
        BridgeConfig(cameras={})


def test_image_encodings() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb, encoding="bgr8")), rgb)
    padded = M.Image(
        height=2,
        width=3,
        encoding="rgb8",
        step=12,
        data=np.pad(rgb.reshape(2, 9), ((0, 0), (0, 3))).tobytes(),
    )
    np.testing.assert_array_equal(image_to_rgb(padded), rgb)
    mono = M.Image(height=1, width=2, encoding="mono8", step=2, data=b"\x05\x09")
    np.testing.assert_array_equal(image_to_rgb(mono), [[[5, 5, 5], [9, 9, 9]]])
    with pytest.raises(ValueError, match="encoding '16UC1' not supported"):
        image_to_rgb(M.Image(height=1, width=1, encoding="16UC1", step=2, data=b"\x00\x00"))


def test_command_from_inputs_that_went_stale_during_inference_is_dropped() -> None:
    bridge, bus, policy, clock, got = make()
    slow = policy.select_action

    def select_action(obs, task=None):
        clock.t += 0.7  # inference longer than max_staleness=0.5
        return slow(obs, task)

    policy.select_action = select_action
    feed(bus, 1)
    assert not bridge.tick() and not got
    assert bridge._paused_reason.startswith("slow policy: inputs were 0.70 s old when the command was ready")


def test_undecodable_dds_samples_are_logged_and_dropped(caplog) -> None:
    from fastvla.ros2.cdr import CdrError
    from fastvla.ros2.dds import deliver_samples

    class Reader:
        def __init__(self, result):
            self.result = result

        def take(self, N):
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

    got: list[M.Message] = []
    with caplog.at_level(logging.WARNING, logger="fastvla.ros2"):
        assert deliver_samples(Reader(CdrError("truncated")), "/js", M.JointState, got.append) == 0
    assert "dropped undecodable sample(s) on /js (sensor_msgs/msg/JointState): truncated" in caplog.text
    assert deliver_samples(Reader([joints(), object()]), "/js", M.JointState, got.append) == 1
    assert len(got) == 1


def test_publisher_refuses_another_message_type_before_sending() -> None:
    bus, got = InProcessTransport(), []
    bus.subscribe("/chatter", M.String, got.append)
    pub = bus.publisher("/chatter", M.String)
    with pytest.raises(TypeError, match="topic /chatter carries std_msgs/msg/String, got JointState"):
        pub.publish(M.JointState())
    pub.publish(M.String("hello"))
    assert [m.data for m in got] == ["hello"] and bus.sent["/chatter"] == 1
