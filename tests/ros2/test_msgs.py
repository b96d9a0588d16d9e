"""Every message type serializes byte for byte as ROS 2 does (reference: ``rosbags``' CDR implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from fastvla.ros2 import msgs as M
from fastvla.ros2.cdr import CdrError
from fastvla.ros2.msgs import Message, Seq

rosbags_typesys = pytest.importorskip("rosbags.typesys")
STORE = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)


def to_rosbags(msg: Message):
    """The same message as a rosbags object (uint8[] and float64[] as numpy arrays, as rosbags wants)."""
    values = {}
    for name, kind in msg.FIELDS:
        value = getattr(msg, name)
        if kind == "octets":
            value = np.frombuffer(bytes(value), dtype=np.uint8)
        elif kind == "float64[]":
            value = np.asarray(value, dtype=np.float64)
        elif isinstance(kind, Seq):
            value = [to_rosbags(item) for item in value]
        elif isinstance(kind, type):
            value = to_rosbags(value)
        values[name] = value
    return STORE.types[msg.ROS_TYPE](**values)


def header(frame: str = "cam_optical") -> M.Header:
    return M.Header(stamp=M.Time(sec=1_700_000_123, nanosec=456_789), frame_id=frame)


rng = np.random.default_rng(0)
SAMPLES: list[Message] = [
    M.Time(sec=-3, nanosec=999_999_999),
    M.Duration.from_sec(1.25),
    header(),
    M.Header(),
    M.String(data="pick up the red cube"),
    M.String(data=""),
    M.String(data="ünïcode ✓"),
    M.MultiArrayDimension(label="action", size=7, stride=7),
    M.MultiArrayLayout(
        dim=[M.MultiArrayDimension("a", 2, 6), M.MultiArrayDimension("b", 3, 3)], data_offset=1
    ),
    M.Float64MultiArray.from_array(rng.normal(size=(2, 3)), labels=("step", "joint")),
    M.Float64MultiArray(),
    M.Image(
        header=header(),
        height=3,
        width=5,
        encoding="rgb8",
        step=15,
        data=rng.integers(0, 255, 45).astype(np.uint8).tobytes(),
    ),
    M.Image(header=header("odd"), height=1, width=1, encoding="mono8", step=1, data=b"\x07"),
    M.CompressedImage(header=header(), format="jpeg", data=bytes(range(13))),
    M.JointState(
        header=header("base"),
        name=["j1", "joint_2", "g"],
        position=[0.1, -0.2, 0.03],
        velocity=[],
        effort=[1.5],
    ),
    M.JointState(),
    M.JointTrajectoryPoint(
        positions=[1.0, 2.0], velocities=[0.5], time_from_start=M.Duration(0, 100_000_000)
    ),
    M.JointTrajectory(
        header=M.Header(frame_id="w"),
        joint_names=["a", "bb", "ccc"],
        points=[
            M.JointTrajectoryPoint(
                positions=rng.normal(size=3), time_from_start=M.Duration.from_sec(0.1 * (i + 1))
            )
            for i in range(4)
        ],
    ),
    M.JointTrajectory(),
]


def test_every_message_type_is_covered() -> None:
    assert {type(s).ROS_TYPE for s in SAMPLES} == set(M.MESSAGES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_bytes_equal_rosbags(msg: Message) -> None:
    ours = msg.serialize()
    ref = bytes(STORE.serialize_cdr(to_rosbags(msg), msg.ROS_TYPE))
    assert ours == ref
    assert ours[:4] == b"\x00\x01\x00\x00"  # plain CDR, little-endian


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_decodes_rosbags_bytes(msg: Message) -> None:
    ref = bytes(STORE.serialize_cdr(to_rosbags(msg), msg.ROS_TYPE))
    back = type(msg).deserialize(ref)
    assert back.serialize() == ref


@pytest.mark.parametrize("msg", SAMPLES[:12:3], ids=lambda m: type(m).__name__)
def test_decodes_big_endian(msg: Message) -> None:
    ref = bytes(STORE.serialize_cdr(to_rosbags(msg), msg.ROS_TYPE, little_endian=False))
    assert ref[:2] == b"\x00\x00"
    assert type(msg).deserialize(ref).serialize() == msg.serialize()


def test_field_layout_matches_ros_definitions() -> None:
    for ros_type, cls in M.MESSAGES.items():
        ref_names = [name for name, _ in STORE.fielddefs[ros_type][1]]
        assert [name for name, _ in cls.FIELDS] == ref_names, ros_type


def test_dds_type_names() -> None:
    assert M.Image.dds_type_name() == "sensor_msgs::msg::dds_::Image_"
    assert M.Float64MultiArray.dds_type_name() == "std_msgs::msg::dds_::Float64MultiArray_"
    assert M.JointTrajectory.dds_type_name() == "trajectory_msgs::msg::dds_::JointTrajectory_"


def test_values_round_trip() -> None:
    js = M.JointState.deserialize(SAMPLES[14].serialize())
    assert js.name == ["j1", "joint_2", "g"]
    np.testing.assert_array_equal(js.position, [0.1, -0.2, 0.03])
    assert js.header.stamp.to_ns() == 1_700_000_123_000_456_789
    fa = M.Float64MultiArray.from_array(np.arange(6.0).reshape(2, 3))
    assert [(d.size, d.stride) for d in fa.layout.dim] == [(2, 6), (3, 3)]


def test_bad_payloads_raise_clear_errors() -> None:
    with pytest.raises(CdrError, match="shorter than its 4-byte header"):
        M.String.deserialize(b"\x00")
    with pytest.raises(CdrError, match="truncated"):
        M.String.deserialize(M.String(data="hello").serialize()[:-3])
    with pytest.raises(CdrError, match="XCDR2"):
        M.String.deserialize(b"\x00\x07\x00\x00" + b"\x00" * 8)


def test_type_hashes_match_rosbags() -> None:
    topic_types = [cls for cls in M.MESSAGES.values() if cls.TYPE_HASH]
    assert {c.ROS_TYPE for c in topic_types} >= {
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/CompressedImage",
        "sensor_msgs/msg/JointState",
        "std_msgs/msg/String",
        "std_msgs/msg/Float64MultiArray",
        "trajectory_msgs/msg/JointTrajectory",
    }
    for cls in topic_types:
        assert STORE.hash_rihs01(cls.ROS_TYPE) == cls.TYPE_HASH, cls.ROS_TYPE


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_ros_discovery_info_matches_rosbags(distro: str) -> None:
    from fastvla.ros2.graph import participant_info

    store = rosbags_typesys.get_typestore(getattr(rosbags_typesys.Stores, f"ROS2_{distro.upper()}"))
    guid = bytes(range(1, 17))
    msg = participant_info(
        guid, "fastvla_bridge", [bytes([7]) * 16, bytes([8]) * 16], [bytes([9]) * 16], distro=distro
    )
    size = 24 if distro == "humble" else 16
    ref_types = store.types
    gid = lambda b: ref_types["rmw_dds_common/msg/Gid"](data=np.frombuffer(b.ljust(size, b"\0"), np.uint8))  # noqa: E731
    ref = ref_types["rmw_dds_common/msg/ParticipantEntitiesInfo"](
        gid=gid(guid),
        node_entities_info_seq=[
            ref_types["rmw_dds_common/msg/NodeEntitiesInfo"](
                node_namespace="/",
                node_name="fastvla_bridge",
                reader_gid_seq=[gid(bytes([7]) * 16), gid(bytes([8]) * 16)],
                writer_gid_seq=[gid(bytes([9]) * 16)],
            )
        ],
    )
    assert msg.serialize() == bytes(store.serialize_cdr(ref, "rmw_dds_common/msg/ParticipantEntitiesInfo"))
    assert type(msg).deserialize(msg.serialize()).serialize() == msg.serialize()
    if distro != "humble":
        assert store.hash_rihs01("rmw_dds_common/msg/ParticipantEntitiesInfo") == type(msg).TYPE_HASH
