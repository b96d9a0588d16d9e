"""Transports the bridge publishes and subscribes through, and ROS 2 naming/QoS conventions.

``Transport`` is the small interface the bridge needs (publish, subscribe, close). Two implementations:
``fastvla.ros2.dds.CycloneDDSTransport`` speaks DDS to real ROS 2 nodes; ``InProcessTransport`` delivers
messages within one process (through a full serialize/deserialize round trip) for tests and dry runs.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastvla.ros2.msgs import Message

_NAME_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class QoS:
    """The QoS knobs ROS 2 profiles set (history is always keep-last).

    Attributes:
        reliable: RELIABLE (``True``) or BEST_EFFORT.
        depth: keep-last history depth.
        transient_local: TRANSIENT_LOCAL durability (late joiners get the last samples) instead of VOLATILE.
        avoid_ros_namespace_conventions: use the topic name as the DDS topic as is (no ``rt`` prefix), as
            ROS 2 does for its graph topic ``ros_discovery_info``.
    """

    reliable: bool = True
    depth: int = 10
    transient_local: bool = False
    avoid_ros_namespace_conventions: bool = False


DEFAULT_QOS = QoS(reliable=True, depth=10)
"""``rclcpp::QoS(10)`` / ``rmw_qos_profile_default``: reliable, volatile, keep last 10."""

SENSOR_QOS = QoS(reliable=False, depth=5)
"""``rmw_qos_profile_sensor_data``: best effort, volatile, keep last 5. A best-effort reader matches both
reliable and best-effort writers, so cameras publishing either way are received."""


def resolve_topic(name: str, node_name: str = "fastvla_bridge", namespace: str = "/") -> str:
    """Expand a ROS 2 topic name to its fully qualified form, as ``rcl`` does.

    ``~/instruction`` becomes ``/<namespace>/<node>/instruction``; a relative name is put under the
    namespace. Raises ``ValueError`` naming the bad token for names ROS 2 would reject.

    Example:
        >>> resolve_topic("~/instruction")
        '/fastvla_bridge/instruction'
    """
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("~"):
        full = f"{ns}/{node_name}{name[1:]}"
    elif name.startswith("/"):
        full = name
    else:
        full = f"{ns}/{name}"
    full = full.rstrip("/") or "/"
    tokens = full.strip("/").split("/")
    for token in tokens:
        if not _NAME_TOKEN.match(token):
            raise ValueError(
                f"invalid ROS 2 topic name {name!r}: token {token!r} must start with a letter or '_' and "
                "contain only letters, digits and '_' (e.g. '/camera/front/image_raw')"
            )
    return full


def dds_topic_name(ros_name: str, avoid_ros_namespace_conventions: bool = False) -> str:
    """DDS topic of a fully qualified ROS 2 topic: ``/joint_states`` -> ``rt/joint_states``."""
    if avoid_ros_namespace_conventions:
        return ros_name
    if not ros_name.startswith("/"):
        raise ValueError(f"expected a fully qualified ROS 2 topic name starting with '/', got {ros_name!r}")
    return "rt" + ros_name


class Publisher(Protocol):
    """Publishes messages of one type on one topic."""

    def publish(self, msg: Message) -> None:
        """Send one message."""
        ...


class Transport(Protocol):
    """What the bridge needs from a middleware."""

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = DEFAULT_QOS) -> Publisher:
        """Create a publisher on a fully qualified ROS 2 topic."""
        ...

    def subscribe(
        self,
        topic: str,
        msg_type: type[Message],
        callback: Callable[[Message], None],
        qos: QoS = DEFAULT_QOS,
    ) -> None:
        """Call ``callback(msg)`` (from any thread) for every message received on ``topic``."""
        ...

    def close(self) -> None:
        """Release all endpoints."""
        ...


class TypedPublisher:
    """A :class:`Publisher` that refuses a message of another type than its topic's, then sends it.

    The transports' publishers subclass it and implement :meth:`_send` (the middleware's write), so every
    transport raises the same ``TypeError`` before anything reaches the wire.
    """

    def __init__(self, topic: str, msg_type: type[Message]) -> None:
        self._topic, self._type = topic, msg_type

    def publish(self, msg: Message) -> None:
        """Send one message of the topic's type.

        Raises:
            TypeError: ``msg`` is not a ``msg_type``.
        """
        if not isinstance(msg, self._type):
            raise TypeError(f"topic {self._topic} carries {self._type.ROS_TYPE}, got {type(msg).__name__}")
        self._send(msg)

    def _send(self, msg: Message) -> None:
        raise NotImplementedError


class _InProcessPublisher(TypedPublisher):
    def __init__(self, transport: InProcessTransport, topic: str, msg_type: type[Message]) -> None:
        super().__init__(topic, msg_type)
        self._transport = transport

    def _send(self, msg: Message) -> None:
        self._transport._deliver(self._topic, self._type, msg.serialize())


class InProcessTransport:
    """Synchronous in-process transport: ``publish`` serializes, then calls each subscriber's callback.

    Types are checked per topic the way DDS matches them (by type name), and every delivery goes through
    the CDR bytes, so the bridge under test sees exactly what it would decode from the wire.
    """

    def __init__(self) -> None:
        self._subs: dict[str, list[tuple[type[Message], Callable[[Message], None]]]] = defaultdict(list)
        self._types: dict[str, type[Message]] = {}
        self._lock = threading.Lock()
        self.sent: dict[str, int] = defaultdict(int)

    def _check_type(self, topic: str, msg_type: type[Message]) -> None:
        with self._lock:
            known = self._types.setdefault(topic, msg_type)
        if known.ROS_TYPE != msg_type.ROS_TYPE:
            raise TypeError(f"topic {topic} already carries {known.ROS_TYPE}, not {msg_type.ROS_TYPE}")

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = DEFAULT_QOS) -> Publisher:
        """Create a publisher (``qos`` is accepted for interface parity; delivery is always reliable)."""
        self._check_type(topic, msg_type)
        return _InProcessPublisher(self, topic, msg_type)

    def subscribe(
        self,
        topic: str,
        msg_type: type[Message],
        callback: Callable[[Message], None],
        qos: QoS = DEFAULT_QOS,
    ) -> None:
        """Register ``callback`` for ``topic``."""
        self._check_type(topic, msg_type)
        with self._lock:
            self._subs[topic].append((msg_type, callback))

    def _deliver(self, topic: str, msg_type: type[Message], payload: bytes) -> None:
        self.sent[topic] += 1
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub_type, callback in subs:
            callback(sub_type.deserialize(payload))

    def close(self) -> None:
        """Drop all subscriptions."""
        with self._lock:
            self._subs.clear()
