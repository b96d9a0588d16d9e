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

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    """Base class of the messages: a subclass sets ``ROS_TYPE``, declares its fields with :func:`ros` in
    ``.msg`` order and is decorated with :func:`message`, which fills ``FIELDS`` (name, kind)."""

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
            _codec(kind)[0](w, getattr(self, name))

    @classmethod
    def _read(cls: type[_M], r: CdrReader) -> _M:
        return cls(**{name: _codec(kind)[1](r) for name, kind in cls.FIELDS})


_Write = Callable[[CdrWriter, Any], None]
_Read = Callable[[CdrReader], Any]


def _primitive(fmt: str) -> tuple[_Write, _Read]:
    return (lambda w, v: w.primitive(fmt, v)), (lambda r: r.primitive(fmt))


def _sequence(write_item: _Write, read_item: _Read) -> tuple[_Write, _Read]:
    """A CDR sequence: uint32 length, then the items."""

    def write(w: CdrWriter, values: Any) -> None:
        w.primitive("I", len(values))
        for item in values:
            write_item(w, item)

    def read(r: CdrReader) -> list[Any]:
        return [read_item(r) for _ in range(int(r.primitive("I")))]

    return write, read


_NAMED_KINDS: dict[str, tuple[_Write, _Read]] = {
    **{name: _primitive(fmt) for name, fmt in _PRIMITIVES.items()},
    "string": (CdrWriter.string, CdrReader.string),
    "octets": (CdrWriter.octets, CdrReader.octets),
    "float64[]": ((lambda w, v: w.array(v, "<f8")), (lambda r: r.array("<f8"))),
}
_NAMED_KINDS["string[]"] = _sequence(*_NAMED_KINDS["string"])


def _codec(kind: Any) -> tuple[_Write, _Read]:
    """``(write, read)`` for one field kind (see the comment on ``_PRIMITIVES``)."""
    if isinstance(kind, str):
        return _NAMED_KINDS[kind]
    if isinstance(kind, OctetArray):
        return (lambda w, v: w.fixed_octets(v, kind.size)), (lambda r: r.fixed_octets(kind.size))
    if isinstance(kind, Seq):
        return _sequence(*_codec(kind.element))
    return (lambda w, v: v._write(w)), kind._read


def _f64(values: Any = ()) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


_ZEROS: dict[str, Any] = {"uint8": 0, "int32": 0, "uint32": 0, "float64": 0.0, "string": "", "octets": b""}
_EMPTY: dict[str, Callable[[], Any]] = {"float64[]": _f64, "string[]": list}


def ros(kind: Any, default: Any = dataclasses.MISSING) -> Any:
    """A message field of ROS field ``kind``, defaulting to ``default`` or else the kind's zero value."""
    metadata = {"ros": kind}
    if default is dataclasses.MISSING and isinstance(kind, OctetArray):
        default = bytes(kind.size)
    elif default is dataclasses.MISSING and isinstance(kind, str) and kind in _ZEROS:
        default = _ZEROS[kind]
    if default is not dataclasses.MISSING:
        return dataclasses.field(default=default, metadata=metadata)
    # Mutable zero values: an empty array or list, a default nested message.
    factory = list if isinstance(kind, Seq) else _EMPTY[kind] if isinstance(kind, str) else kind
    return dataclasses.field(default_factory=factory, metadata=metadata)


def message(cls: type[_M]) -> type[_M]:
    """Class decorator: ``cls`` as a ``dataclass(eq=False)`` whose ``FIELDS`` lists its :func:`ros` fields."""
    cls = dataclasses.dataclass(eq=False)(cls)
    cls.FIELDS = tuple((f.name, f.metadata["ros"]) for f in dataclasses.fields(cls))
    return cls


# --- builtin_interfaces / std_msgs ------------------------------------------------------------------


@message
class _SecNanosec(Message):
    """The layout ``Time`` and ``Duration`` share: whole seconds and nanoseconds."""

    sec: int = ros("int32")
    nanosec: int = ros("uint32")

    @classmethod
    def from_ns(cls: type[_M], ns: int) -> _M:
        """Split integer nanoseconds into ``sec``/``nanosec``."""
        return cls(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def to_ns(self) -> int:
        """Total nanoseconds."""
        return self.sec * 1_000_000_000 + self.nanosec

    def to_sec(self) -> float:
        """Seconds as a float."""
        return self.sec + self.nanosec * 1e-9


@message
class Time(_SecNanosec):
    """``builtin_interfaces/msg/Time``: seconds and nanoseconds since the epoch (or sim time)."""

    ROS_TYPE: ClassVar[str] = "builtin_interfaces/msg/Time"

    @classmethod
    def now(cls) -> Time:
        """The current wall-clock time (what ``rclcpp::Clock`` gives with ``use_sim_time`` off)."""
        return cls.from_ns(time.time_ns())


@message
class Duration(_SecNanosec):
    """``builtin_interfaces/msg/Duration``."""

    ROS_TYPE: ClassVar[str] = "builtin_interfaces/msg/Duration"

    @classmethod
    def from_sec(cls, seconds: float) -> Duration:
        """A non-negative duration from float seconds (rounded to the nanosecond)."""
        return cls.from_ns(round(seconds * 1e9))


@message
class Header(Message):
    """``std_msgs/msg/Header``: acquisition time and coordinate frame."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/Header"
    stamp: Time = ros(Time)
    frame_id: str = ros("string")


@message
class String(Message):
    """``std_msgs/msg/String`` (the bridge's run-time instruction topic)."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/String"
    TYPE_HASH: ClassVar[str] = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
    data: str = ros("string")


@message
class MultiArrayDimension(Message):
    """``std_msgs/msg/MultiArrayDimension``."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/MultiArrayDimension"
    label: str = ros("string")
    size: int = ros("uint32")
    stride: int = ros("uint32")


@message
class MultiArrayLayout(Message):
    """``std_msgs/msg/MultiArrayLayout``."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/MultiArrayLayout"
    dim: list[MultiArrayDimension] = ros(Seq(MultiArrayDimension))
    data_offset: int = ros("uint32")


@message
class Float64MultiArray(Message):
    """``std_msgs/msg/Float64MultiArray``: what ``forward_command_controller`` (ros2_control) consumes."""

    ROS_TYPE: ClassVar[str] = "std_msgs/msg/Float64MultiArray"
    TYPE_HASH: ClassVar[str] = "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f"
    layout: MultiArrayLayout = ros(MultiArrayLayout)
    data: np.ndarray = ros("float64[]")

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


@message
class Image(Message):
    """``sensor_msgs/msg/Image``: an uncompressed image (``data`` is ``height * step`` bytes)."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/Image"
    TYPE_HASH: ClassVar[str] = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
    header: Header = ros(Header)
    height: int = ros("uint32")
    width: int = ros("uint32")
    encoding: str = ros("string")
    is_bigendian: int = ros("uint8")
    step: int = ros("uint32")
    data: bytes = ros("octets")


@message
class CompressedImage(Message):
    """``sensor_msgs/msg/CompressedImage``: JPEG or PNG bytes (``image_transport``'s ``/compressed``)."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/CompressedImage"
    TYPE_HASH: ClassVar[str] = "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a"
    header: Header = ros(Header)
    format: str = ros("string")
    data: bytes = ros("octets")


@message
class JointState(Message):
    """``sensor_msgs/msg/JointState``: names with positions (rad or m), velocities and efforts."""

    ROS_TYPE: ClassVar[str] = "sensor_msgs/msg/JointState"
    TYPE_HASH: ClassVar[str] = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
    header: Header = ros(Header)
    name: list[str] = ros("string[]")
    position: np.ndarray = ros("float64[]")
    velocity: np.ndarray = ros("float64[]")
    effort: np.ndarray = ros("float64[]")


# --- trajectory_msgs --------------------------------------------------------------------------------


@message
class JointTrajectoryPoint(Message):
    """``trajectory_msgs/msg/JointTrajectoryPoint``: one waypoint, timed from the trajectory start."""

    ROS_TYPE: ClassVar[str] = "trajectory_msgs/msg/JointTrajectoryPoint"
    positions: np.ndarray = ros("float64[]")
    velocities: np.ndarray = ros("float64[]")
    accelerations: np.ndarray = ros("float64[]")
    effort: np.ndarray = ros("float64[]")
    time_from_start: Duration = ros(Duration)


@message
class JointTrajectory(Message):
    """``trajectory_msgs/msg/JointTrajectory``: what ``joint_trajectory_controller`` consumes.

    A zero ``header.stamp`` means "start now" to ros2_control's trajectory controller.
    """

    ROS_TYPE: ClassVar[str] = "trajectory_msgs/msg/JointTrajectory"
    TYPE_HASH: ClassVar[str] = "RIHS01_179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e"
    header: Header = ros(Header)
    joint_names: list[str] = ros("string[]")
    points: list[JointTrajectoryPoint] = ros(Seq(JointTrajectoryPoint))


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
