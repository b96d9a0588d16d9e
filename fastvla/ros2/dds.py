"""DDS transport on Eclipse Cyclone DDS (the ``cyclonedds`` wheel bundles the C library).

Wire compatibility with ``rmw_cyclonedds_cpp`` (ROS 2's Cyclone RMW) comes from matching what it puts on
the wire: topic ``rt/<name>``, type name ``<pkg>::msg::dds_::<Name>_``, keyless ``@final`` types, plain
CDR little-endian payloads (data representation XCDR1), and the ROS 2 QoS profiles. rmw_cyclonedds sends
no XTypes type information, so endpoints match by type name; our payload bytes are produced by
:mod:`fastvla.ros2.msgs` (checked against ``rosbags``), not by Cyclone's Python serializer.

Network scope: by default (``network="loopback"``) the process is pinned to 127.0.0.1 with multicast off
and unicast discovery of peers on 127.0.0.1, through ``CYCLONEDDS_URI``. Cyclone reads that variable when
the first participant of the process is created, so :func:`configure_network` must run before any
``DomainParticipant`` exists; :class:`CycloneDDSTransport` does it for you.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from fastvla.ros2.msgs import Message, OctetArray, Seq
from fastvla.ros2.transport import DEFAULT_QOS, QoS, TypedPublisher, dds_topic_name

logger = logging.getLogger("fastvla.ros2")

INSTALL_HINT = "pip install 'fastvla[ros2]'"

LOOPBACK_CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface address="127.0.0.1" multicast="false"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
      <MaxMessageSize>65500B</MaxMessageSize>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>{max_participants}</MaxAutoParticipantIndex>
      <DefaultMulticastAddress>0.0.0.0</DefaultMulticastAddress>
      <Peers><Peer address="127.0.0.1"/></Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""
"""Cyclone DDS configuration for one machine: loopback only, no multicast, unicast discovery on 127.0.0.1.
Use the same file on the ROS 2 side (``export CYCLONEDDS_URI=file:///path/to/it.xml``)."""

NETWORK_MODES = ("loopback", "env")


class MissingDependencyError(ImportError):
    """The optional DDS stack is not installed."""


def loopback_config(max_participants: int = 100) -> str:
    """The loopback-only Cyclone DDS XML (``max_participants`` processes on this host per domain)."""
    return LOOPBACK_CONFIG.format(max_participants=max_participants)


def configure_network(network: str = "loopback") -> None:
    """Set ``CYCLONEDDS_URI`` for ``network`` before Cyclone DDS initialises in this process.

    Args:
        network: ``"loopback"`` (default) pins DDS to 127.0.0.1 without multicast; ``"env"`` leaves
            ``CYCLONEDDS_URI`` (or Cyclone's defaults: all interfaces, multicast discovery) untouched,
            which is what reaching a robot on another machine needs.
    """
    if network not in NETWORK_MODES:
        raise ValueError(f"network {network!r} not supported; choose one of {NETWORK_MODES}")
    if network == "loopback":
        os.environ["CYCLONEDDS_URI"] = loopback_config()


def import_cyclonedds() -> Any:
    """Import the ``cyclonedds`` package or raise :class:`MissingDependencyError` with the install line."""
    try:
        import cyclonedds.core
        import cyclonedds.domain
        import cyclonedds.idl
        import cyclonedds.idl.types
        import cyclonedds.pub
        import cyclonedds.qos
        import cyclonedds.sub
        import cyclonedds.topic
    except ImportError as err:
        raise MissingDependencyError(
            f"the ROS 2 bridge needs the Cyclone DDS Python package ({err}); install it with: {INSTALL_HINT}"
        ) from err
    return cyclonedds


def _cyclone_qos(qos: QoS, writer: bool, type_hash: str = "") -> Any:
    from cyclonedds.core import Policy
    from cyclonedds.qos import Qos
    from cyclonedds.util import duration

    reliability = (
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
        if qos.reliable
        else Policy.Reliability.BestEffort
    )
    durability = Policy.Durability.TransientLocal if qos.transient_local else Policy.Durability.Volatile
    # rmw_cyclonedds only speaks plain CDR (XCDR1): offer exactly that, or ROS readers will not match.
    representation = Policy.DataRepresentation(
        use_cdrv0_representation=True, use_xcdrv2_representation=not writer
    )
    policies = [reliability, durability, Policy.History.KeepLast(qos.depth), representation]
    if type_hash:  # what rmw_dds_common puts in USER_DATA since Iron, for `ros2 topic info -v`
        policies.append(Policy.Userdata(data=f"typehash={type_hash};".encode()))
    return Qos(*policies)


class _TypeRegistry:
    """Cyclone ``IdlStruct`` classes named and shaped like ROS 2's, serializing through our CDR code."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def idl_type(self, msg_type: type[Message]) -> type:
        if msg_type.ROS_TYPE in self._classes:
            return self._classes[msg_type.ROS_TYPE]
        from cyclonedds.idl import make_idl_struct
        from cyclonedds.idl import types as t

        kinds = {
            "uint8": t.uint8,
            "int32": t.int32,
            "uint32": t.uint32,
            "float64": t.float64,
            "string": str,
            "octets": t.sequence[t.uint8],
            "float64[]": t.sequence[t.float64],
            "string[]": t.sequence[str],
        }
        fields: dict[str, Any] = {}
        for name, kind in msg_type.FIELDS:
            if isinstance(kind, Seq):
                fields[name] = t.sequence[self.idl_type(kind.element)]
            elif isinstance(kind, OctetArray):
                fields[name] = t.array[t.uint8, kind.size]
            elif isinstance(kind, type):
                fields[name] = self.idl_type(kind)
            else:
                fields[name] = kinds[kind]
        cls = make_idl_struct(msg_type.__name__ + "_", msg_type.dds_type_name(), fields)

        def serialize(self: Any, *args: Any, **kwargs: Any) -> bytes:
            return self._fastvla_payload

        def deserialize(klass: type, data: bytes, *args: Any, **kwargs: Any) -> Message:
            return msg_type.deserialize(data)

        cls.serialize = serialize
        cls.deserialize = classmethod(deserialize)
        self._classes[msg_type.ROS_TYPE] = cls
        return cls

    def wrap(self, msg: Message) -> Any:
        cls = self.idl_type(type(msg))
        sample = cls.__new__(cls)
        sample._fastvla_payload = msg.serialize()
        return sample


def deliver_samples(
    reader: Any, topic: str, msg_type: type[Message], callback: Callable[[Message], None]
) -> int:
    """Take what ``reader`` holds and pass each decoded message to ``callback``; returns how many.

    Runs on Cyclone's listener thread: a sample that does not decode (a writer with the same type name
    but another layout; rmw_cyclonedds sends no type information, so DDS cannot catch that) is logged
    and dropped instead of raising into the C library.
    """
    try:
        samples = reader.take(N=64)
    except Exception as err:
        logger.warning("dropped undecodable sample(s) on %s (%s): %s", topic, msg_type.ROS_TYPE, err)
        return 0
    delivered = 0
    for sample in samples:
        if isinstance(sample, Message):  # skips dispose/unregister notifications
            callback(sample)
            delivered += 1
    return delivered


class _DDSPublisher(TypedPublisher):
    def __init__(self, writer: Any, registry: _TypeRegistry, msg_type: type[Message], topic: str) -> None:
        super().__init__(topic, msg_type)
        self._writer, self._registry = writer, registry

    def _send(self, msg: Message) -> None:
        self._writer.write(self._registry.wrap(msg))


class CycloneDDSTransport:
    """ROS 2-compatible publish/subscribe over Cyclone DDS.

    Args:
        domain_id: ROS 2 domain (``ROS_DOMAIN_ID`` on the ROS side), 0-232.
        network: ``"loopback"`` (127.0.0.1 only, no multicast) or ``"env"`` (use ``CYCLONEDDS_URI`` or
            Cyclone's defaults); see :func:`configure_network`.

    Example:
        >>> from fastvla.ros2.msgs import String
        >>> dds = CycloneDDSTransport(domain_id=42)  # doctest: +SKIP
        >>> dds.publisher("/chatter", String).publish(String("hello"))  # doctest: +SKIP
    """

    def __init__(self, domain_id: int = 0, network: str = "loopback") -> None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"domain_id {domain_id} out of range; ROS 2 uses 0-232 (ROS_DOMAIN_ID)")
        configure_network(network)
        import_cyclonedds()
        from cyclonedds.domain import DomainParticipant

        self.domain_id = domain_id
        self.participant = DomainParticipant(domain_id)
        self._registry = _TypeRegistry()
        self._topics: dict[str, Any] = {}
        self._entities: list[Any] = []
        self._lock = threading.Lock()
        self.gid = self.participant.guid.bytes  # 16-byte DDS GUIDs, as rmw_cyclonedds makes its gids
        self.reader_gids: list[bytes] = []
        self.writer_gids: list[bytes] = []

    def _topic(self, topic: str, msg_type: type[Message], qos: QoS = DEFAULT_QOS) -> Any:
        from cyclonedds.topic import Topic

        name = dds_topic_name(topic, qos.avoid_ros_namespace_conventions)
        with self._lock:
            if name not in self._topics:
                self._topics[name] = Topic(self.participant, name, self._registry.idl_type(msg_type))
            return self._topics[name]

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = DEFAULT_QOS) -> _DDSPublisher:
        """Create a DataWriter on ``rt<topic>`` with ROS 2's type name and the given QoS."""
        from cyclonedds.pub import DataWriter

        qos_w = _cyclone_qos(qos, writer=True, type_hash=msg_type.TYPE_HASH)
        writer = DataWriter(self.participant, self._topic(topic, msg_type, qos), qos=qos_w)
        self._entities.append(writer)
        if not qos.avoid_ros_namespace_conventions:  # ROS' own graph topics are not part of a node
            self.writer_gids.append(writer.guid.bytes)
        return _DDSPublisher(writer, self._registry, msg_type, topic)

    def subscribe(
        self,
        topic: str,
        msg_type: type[Message],
        callback: Callable[[Message], None],
        qos: QoS = DEFAULT_QOS,
    ) -> None:
        """Create a DataReader whose listener calls ``callback(msg)`` from Cyclone's receive thread."""
        from cyclonedds.core import Listener
        from cyclonedds.sub import DataReader

        def on_data_available(reader: Any) -> None:
            deliver_samples(reader, topic, msg_type, callback)

        reader = DataReader(
            self.participant,
            self._topic(topic, msg_type, qos),
            qos=_cyclone_qos(qos, writer=False, type_hash=msg_type.TYPE_HASH),
            listener=Listener(on_data_available=on_data_available),
        )
        self._entities.append(reader)
        if not qos.avoid_ros_namespace_conventions:
            self.reader_gids.append(reader.guid.bytes)

    def close(self) -> None:
        """Delete the participant and everything it owns."""
        self._entities.clear()
        self._topics.clear()
        participant, self.participant = self.participant, None
        if participant is not None:
            del participant
