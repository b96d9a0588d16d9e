"""The ROS 2 message types the bridge speaks, as plain dataclasses that (de)serialize to ROS 2's CDR bytes.

Each class mirrors its ``.msg`` definition field for field (names, order, types) and knows its ROS name
(``sensor_msgs/msg/Image``) and its DDS type name (``sensor_msgs::msg::dds_::Image_``, what
``rmw_cyclonedds_cpp`` puts on the wire). No ROS install is needed: the layout is written out here and
checked byte for byte against ``rosbags`` in ``tests/ros2/test_msgs.py``.

Example:
    >>> from fastvla.ros2.msgs import String
    >>> String(data="pick up the red cube").serialize()[:8].hex()
    '0001000015000000'
    >>> String.deserialize(String(data="hi").serialize()).data
    'hi'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from fastvla.ros2.cdr import CdrReader, CdrWriter

_M = TypeVar("_M", bound="Message")

# Field kinds: a primitive name, "string", "octets" (uint8[]), "float64[]", "string[]",
# a Message subclass, Seq(MessageSubclass) for a sequence of messages, OctetArray(N) for uint8[N].
_PRIMITIVES = {"uint8": "B", "int32": "i", "uint32": "I", "float64": "d"}


@dataclass(frozen=True)
class Seq:
    """Field kind: an unbounded sequence of nested messages."""

    element: type[Message]


@dataclass(frozen=True)
class OctetArray:
    """Field kind: a fixed-size ``uint8[N]`` / ``char[N]`` array (raw bytes, no length prefix)."""

    size: int


class Message:
    """Base class: subclasses set ``ROS_TYPE`` and ``FIELDS`` (name, kind) in ``.msg`` order."""

    ROS_TYPE: ClassVar[str]
    FIELDS: ClassVar[tuple[tuple[str, Any], ...]]
    TYPE_HASH: ClassVar[str] = ""
    """REP-2016 type hash (``RIHS01_...``) that Iron and later put in endpoint USER_DATA; set on the
    types used as topics (identical for Humble..Kilted definitions, checked against rosbags)."""

    @classmethod
    def dds_type_name(cls) -> str:
        """DDS type name of this message, e.g. ``sensor_msgs::msg::dds_::Image_``."""
        package, kind, name = cls.ROS_TYPE.split("/")
        return f"{package}::{kind}::dds_::{name}_"

    def serialize(self) -> bytes:
        """Encode as a ROS 2 CDR payload (4-byte header + body), as a ROS 2 publisher sends it."""
        writer = CdrWriter()
        self._write(writer)
        return writer.getvalue()

    @classmethod
    def deserialize(cls: type[_M], data: bytes | bytearray | memoryview) -> _M:
        """Decode a ROS 2 CDR payload (header included) into this message type."""
        return cls._read(CdrReader(data))

    def _write(self, w: CdrWriter) -> None:
        for name, kind in self.FIELDS:
            value = getattr(self, name)
            if isinstance(kind, str) and kind in _PRIMITIVES:
                w.primitive(_PRIMITIVES[kind], value)
            elif kind == "string":
                w.string(value)
            elif kind == "octets":
                w.octets(value)
            elif isinstance(kind, OctetArray):
                data = bytes(value)
                if len(data) != kind.size:
                    raise ValueError(f"{type(self).__name__}.{name} needs {kind.size} bytes, got {len(data)}")
                w.buf += data
            elif kind == "float64[]":
                w.array(value, "<f8")
            elif kind == "string[]":
                w.primitive("I", len(value))
                for item in value:
                    w.string(item)
            elif isinstance(kind, Seq):
                w.primitive("I", len(value))
                for item in value:
                    item._write(w)
            else:
                value._write(w)

    @classmethod
    def _read(cls: type[_M], r: CdrReader) -> _M:
        values: dict[str, Any] = {}
        for name, kind in cls.FIELDS:
            if isinstance(kind, str) and kind in _PRIMITIVES:
                values[name] = r.primitive(_PRIMITIVES[kind])
            elif kind == "string":
                values[name] = r.string()
            elif kind == "octets":
                values[name] = r.octets()
            elif isinstance(kind, OctetArray):
                values[name] = r.fixed_octets(kind.size)
            elif kind == "float64[]":
                values[name] = r.array("<f8")
            elif kind == "string[]":
                values[name] = [r.string() for _ in range(int(r.primitive("I")))]
            elif isinstance(kind, Seq):
                values[name] = [kind.element._read(r) for _ in range(int(r.primitive("I")))]
            else:
                values[name] = kind._read(r)
        return cls(**values)


def _f64(values: Any = ()) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


# --- builtin_interfaces / std_msgs ------------------------------------------------------------------


@dataclass(eq=False)
class Time(Message):
    """``builtin_interfaces/msg/Time``: seconds and nanoseconds since the epoch (or sim time)."""

    ROS_TYPE: ClassVar[str] = "builtin_interfaces/msg/Time"
    FIELDS: ClassVar = (("sec", "int32"), ("nanosec", "uint32"))
    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> Time:
        """Split integer nanoseconds into ``sec``/``nanosec``."""
        return cls(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    @classmethod
    def now(cls) -> Time:
        """The current wall-clock time (what ``rclcpp::Clock`` gives with ``use_sim_time`` off)."""
        return cls.from_ns(time.time_ns())

    def to_ns(self) -> int:
        """Total nanoseconds."""
        return self.sec * 1_000_000_000 + self.nanosec

    def to_sec(self) -> float:
        """Seconds as a float."""
        return self.sec + self.nanosec * 1e-9


@dataclass(eq=False)
class Duration(Message):
    """``builtin_interfaces/msg/Duration``."""

    ROS_TYPE: ClassVar[str] = "builtin_interfaces/msg/Duration"
    FIELDS: ClassVar = (("sec", "int32"), ("nanosec", "uint32"))
    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_sec(cls, seconds: float) -> Duration:
        """A non-negative duration from float seconds (rounded to the nanosecond)."""
        ns = round(seconds * 1e9)
        return cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def to_sec(self) -> float:
        """Seconds as a float."""
        return self.sec + self.nanosec * 1e-9


@dataclass(eq=False)
class Header(Message):
    """``std_msgs/msg/Header``: acquisition time and coordinate frame."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/Header"
    FIELDS: ClassVar = (("stamp", Time), ("frame_id", "string"))
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass(eq=False)
class String(Message):
    """``std_msgs/msg/String`` (the bridge's run-time instruction topic)."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/String"
    TYPE_HASH: ClassVar[str] = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
    FIELDS: ClassVar = (("data", "string"),)
    data: str = ""


@dataclass(eq=False)
class MultiArrayDimension(Message):
    """``std_msgs/msg/MultiArrayDimension``."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/MultiArrayDimension"
    FIELDS: ClassVar = (("label", "string"), ("size", "uint32"), ("stride", "uint32"))
    label: str = ""
    size: int = 0
    stride: int = 0


@dataclass(eq=False)
class MultiArrayLayout(Message):
    """``std_msgs/msg/MultiArrayLayout``."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/MultiArrayLayout"
    FIELDS: ClassVar = (("dim", Seq(MultiArrayDimension)), ("data_offset", "uint32"))
    dim: list[MultiArrayDimension] = field(default_factory=list)
    data_offset: int = 0


@dataclass(eq=False)
class Float64MultiArray(Message):
    """``std_msgs/msg/Float64MultiArray``: what ``forward_command_controller`` (ros2_control) consumes."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/Float64MultiArray"
    TYPE_HASH: ClassVar[str] = "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f"
    FIELDS: ClassVar = (("layout", MultiArrayLayout), ("data", "float64[]"))
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: np.ndarray = field(default_factory=_f64)

    @classmethod
    def from_array(cls, values: np.ndarray, labels: tuple[str, ...] = ()) -> Float64MultiArray:
        """Wrap an N-d array with a row-major layout (one dimension per axis, strides in elements)."""
        arr = np.asarray(values, dtype=np.float64)
        dims, stride = [], int(arr.size)
        for axis, size in enumerate(arr.shape):
            label = labels[axis] if axis < len(labels) else f"dim{axis}"
            dims.append(MultiArrayDimension(label=label, size=int(size), stride=stride))
            stride = stride // max(int(size), 1)
        return cls(layout=MultiArrayLayout(dim=dims, data_offset=0), data=arr.reshape(-1))


# --- sensor_msgs ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Image(Message):
    """``sensor_msgs/msg/Image``: an uncompressed image (``data`` is ``height * step`` bytes)."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/Image"
    TYPE_HASH: ClassVar[str] = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
    FIELDS: ClassVar = (
        ("header", Header),
        ("height", "uint32"),
        ("width", "uint32"),
        ("encoding", "string"),
        ("is_bigendian", "uint8"),
        ("step", "uint32"),
        ("data", "octets"),
    )
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""


@dataclass(eq=False)
class CompressedImage(Message):
    """``sensor_msgs/msg/CompressedImage``: JPEG or PNG bytes (``image_transport``'s ``/compressed``)."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/CompressedImage"
    TYPE_HASH: ClassVar[str] = "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a"
    FIELDS: ClassVar = (("header", Header), ("format", "string"), ("data", "octets"))
    header: Header = field(default_factory=Header)
    format: str = ""
    data: bytes = b""


@dataclass(eq=False)
class JointState(Message):
    """``sensor_msgs/msg/JointState``: names with positions (rad or m), velocities and efforts."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/JointState"
    TYPE_HASH: ClassVar[str] = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
    FIELDS: ClassVar = (
        ("header", Header),
        ("name", "string[]"),
        ("position", "float64[]"),
        ("velocity", "float64[]"),
        ("effort", "float64[]"),
    )
    header: Header = field(default_factory=Header)
    name: list[str] = field(default_factory=list)
    position: np.ndarray = field(default_factory=_f64)
    velocity: np.ndarray = field(default_factory=_f64)
    effort: np.ndarray = field(default_factory=_f64)


# --- trajectory_msgs --------------------------------------------------------------------------------


@dataclass(eq=False)
class JointTrajectoryPoint(Message):
    """``trajectory_msgs/msg/JointTrajectoryPoint``: one waypoint, timed from the trajectory start."""

    ROS_TYPE: ClassVar[str] = "trajectory_msgs/msg/JointTrajectoryPoint"
    FIELDS: ClassVar = (
        ("positions", "float64[]"),
        ("velocities", "float64[]"),
        ("accelerations", "float64[]"),
        ("effort", "float64[]"),
        ("time_from_start", Duration),
    )
    positions: np.ndarray = field(default_factory=_f64)
    velocities: np.ndarray = field(default_factory=_f64)
    accelerations: np.ndarray = field(default_factory=_f64)
    effort: np.ndarray = field(default_factory=_f64)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass(eq=False)
class JointTrajectory(Message):
    """``trajectory_msgs/msg/JointTrajectory``: what ``joint_trajectory_controller`` consumes.

    A zero ``header.stamp`` means "start now" to ros2_control's trajectory controller.
    """

    ROS_TYPE: ClassVar[str] = "trajectory_msgs/msg/JointTrajectory"
    TYPE_HASH: ClassVar[str] = "RIHS01_179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e"
    FIELDS: ClassVar = (
        ("header", Header),
        ("joint_names", "string[]"),
        ("points", Seq(JointTrajectoryPoint)),
    )
    header: Header = field(default_factory=Header)
    joint_names: list[str] = field(default_factory=list)
    points: list[JointTrajectoryPoint] = field(default_factory=list)


MESSAGES: dict[str, type[Message]] = {
    cls.ROS_TYPE: cls
    for cls in (
        Time,
        Duration,
        Header,
        String,
        MultiArrayDimension,
        MultiArrayLayout,
        Float64MultiArray,
        Image,
        CompressedImage,
        JointState,
        JointTrajectoryPoint,
        JointTrajectory,
    )
}
"""Every message type this package implements, by ROS name."""
