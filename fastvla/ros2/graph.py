"""Make the bridge a node in the ROS 2 graph (``ros2 node list``, node names in ``ros2 topic info -v``).

ROS 2 maps DDS participants and endpoints to nodes through the ``ros_discovery_info`` topic
(``rmw_dds_common/msg/ParticipantEntitiesInfo``: the participant's gid and, per node, the gids of its
readers and writers; reliable, transient-local, keep last 1, no ``rt/`` prefix). ``rmw_cyclonedds_cpp``
makes a gid from a 16-byte DDS GUID, zero-padded to the distro's ``Gid`` size: 24 bytes in Humble,
16 from Iron on. The message is sent once: the bridge's endpoints never change, and transient-local
durability hands it to nodes that start later.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastvla.ros2.msgs import Message, OctetArray, Seq, message, ros
from fastvla.ros2.transport import QoS

DISCOVERY_TOPIC = "ros_discovery_info"
DISCOVERY_QOS = QoS(reliable=True, depth=1, transient_local=True, avoid_ros_namespace_conventions=True)
GID_SIZES = {"humble": 24, "iron": 16, "jazzy": 16, "kilted": 16, "lyrical": 16}
_HASH = "RIHS01_e725f4a506958c79f95dd693b965722c57b19cd18e7eff984f49561b93dc985d"  # Iron..Kilted


def discovery_types(distro: str = "jazzy") -> dict[str, type[Message]]:
    """``Gid``, ``NodeEntitiesInfo`` and ``ParticipantEntitiesInfo`` as laid out in ``distro``."""
    if distro not in GID_SIZES:
        raise ValueError(f"ROS distro {distro!r} unknown; choose one of {sorted(GID_SIZES)}")
    size = GID_SIZES[distro]

    @message
    class Gid(Message):
        ROS_TYPE: ClassVar[str] = "rmw_dds_common/msg/Gid"
        data: bytes = ros(OctetArray(size))

        @classmethod
        def from_guid(cls, guid: bytes) -> Gid:
            return cls(data=bytes(guid).ljust(size, b"\x00"))

    @message
    class NodeEntitiesInfo(Message):
        ROS_TYPE: ClassVar[str] = "rmw_dds_common/msg/NodeEntitiesInfo"
        node_namespace: str = ros("string", "/")
        node_name: str = ros("string")
        reader_gid_seq: list[Gid] = ros(Seq(Gid))
        writer_gid_seq: list[Gid] = ros(Seq(Gid))

    @message
    class ParticipantEntitiesInfo(Message):
        ROS_TYPE: ClassVar[str] = "rmw_dds_common/msg/ParticipantEntitiesInfo"
        TYPE_HASH: ClassVar[str] = "" if distro == "humble" else _HASH
        gid: Gid = ros(Gid)
        node_entities_info_seq: list[NodeEntitiesInfo] = ros(Seq(NodeEntitiesInfo))

    return {
        "Gid": Gid,
        "NodeEntitiesInfo": NodeEntitiesInfo,
        "ParticipantEntitiesInfo": ParticipantEntitiesInfo,
    }


def participant_info(
    gid: bytes,
    node_name: str,
    reader_gids: list[bytes],
    writer_gids: list[bytes],
    namespace: str = "/",
    distro: str = "jazzy",
) -> Message:
    """The ``ParticipantEntitiesInfo`` describing one node and its endpoints (GUIDs as 16 bytes each)."""
    types = discovery_types(distro)
    gid_cls = types["Gid"]
    node = types["NodeEntitiesInfo"](
        node_namespace=namespace,
        node_name=node_name,
        reader_gid_seq=[gid_cls.from_guid(g) for g in reader_gids],
        writer_gid_seq=[gid_cls.from_guid(g) for g in writer_gids],
    )
    return types["ParticipantEntitiesInfo"](gid=gid_cls.from_guid(gid), node_entities_info_seq=[node])


def announce_node(transport: Any, node_name: str, namespace: str = "/", distro: str = "jazzy") -> Message:
    """Publish the node on ``ros_discovery_info`` through a Cyclone transport; call after all endpoints exist.

    Returns the message sent. Needs a transport that exposes ``gid``, ``reader_gids`` and ``writer_gids``
    (:class:`~fastvla.ros2.dds.CycloneDDSTransport`).
    """
    msg = participant_info(
        transport.gid, node_name, list(transport.reader_gids), list(transport.writer_gids), namespace, distro
    )
    transport.publisher(DISCOVERY_TOPIC, type(msg), DISCOVERY_QOS).publish(msg)
    return msg
