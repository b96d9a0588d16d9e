"""Wire check run in a subprocess (inside a private network namespace) by test_loopback.py.

A "stock" Cyclone DDS application, written the way a plain DDS program talks to ROS 2 (hand-written IDL
with ROS 2's type names, Cyclone's own XCDR1 serializer), exchanges messages with our transport, and
reads the discovery data a ROS 2 node would see for our endpoints. Prints one JSON object.
"""

import json
import sys
import time
from dataclasses import dataclass

from fastvla.ros2 import msgs as M
from fastvla.ros2.dds import CycloneDDSTransport
from fastvla.ros2.transport import SENSOR_QOS


def main(domain_id: int) -> dict:  # no `from __future__ import annotations`: Cyclone resolves hints
    ours = CycloneDDSTransport(domain_id=domain_id)  # sets the loopback config before Cyclone starts
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.core import Policy
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl.types import array, float64, int32, sequence, uint8, uint32
    from cyclonedds.pub import DataWriter
    from cyclonedds.qos import Qos
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from fastvla.ros2.graph import announce_node

    @dataclass
    class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
        sec: int32
        nanosec: uint32

    @dataclass
    class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
        stamp: Time_
        frame_id: str

    @dataclass
    class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
        header: Header_
        name: sequence[str]
        position: sequence[float64]
        velocity: sequence[float64]
        effort: sequence[float64]

    @dataclass
    class MultiArrayDimension_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
        label: str
        size: uint32
        stride: uint32

    @dataclass
    class MultiArrayLayout_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
        dim: sequence[MultiArrayDimension_]
        data_offset: uint32

    @dataclass
    class Float64MultiArray_(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
        layout: MultiArrayLayout_
        data: sequence[float64]

    @dataclass
    class Gid_(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
        data: array[uint8, 16]

    @dataclass
    class NodeEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
        node_namespace: str
        node_name: str
        reader_gid_seq: sequence[Gid_]
        writer_gid_seq: sequence[Gid_]

    @dataclass
    class ParticipantEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
        gid: Gid_
        node_entities_info_seq: sequence[NodeEntitiesInfo_]

    xcdr1 = Policy.DataRepresentation(use_cdrv0_representation=True)
    stock = DomainParticipant(domain_id)
    stock_reader = DataReader(
        stock, Topic(stock, "rt/joint_states", JointState_), qos=Qos(Policy.Reliability.BestEffort, xcdr1)
    )
    stock_writer = DataWriter(
        stock,
        Topic(stock, "rt/arm/commands", Float64MultiArray_),
        qos=Qos(Policy.Reliability.Reliable(max_blocking_time=100_000_000), xcdr1),
    )
    got_commands: list[M.Float64MultiArray] = []
    ours.subscribe("/arm/commands", M.Float64MultiArray, got_commands.append)
    pub = ours.publisher("/joint_states", M.JointState, SENSOR_QOS)
    announce_node(ours, "probe_node", distro="jazzy")  # after the node's endpoints exist
    graph_reader = DataReader(
        stock,
        Topic(stock, "ros_discovery_info", ParticipantEntitiesInfo_),
        qos=Qos(Policy.Reliability.Reliable(0), Policy.Durability.TransientLocal, xcdr1),
    )
    js = M.JointState(
        header=M.Header(stamp=M.Time(12, 345), frame_id="base"), name=["a", "b"], position=[0.5, -1.25]
    )
    stock_js: list = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (stock_js and got_commands):
        pub.publish(js)
        stock_writer.write(
            Float64MultiArray_(
                layout=MultiArrayLayout_(dim=[MultiArrayDimension_("action", 3, 3)], data_offset=0),
                data=[1.0, 2.0, 3.0],
            )
        )
        time.sleep(0.1)
        stock_js += stock_reader.take(N=10)
    graph = graph_reader.take(N=10)
    pubs = BuiltinDataReader(stock, BuiltinTopicDcpsPublication).take(N=200)
    ours_js = [p for p in pubs if p.topic_name == "rt/joint_states" and p.participant_key != stock.guid]
    ep = ours_js[0] if ours_js else None
    stock_bytes = JointState_(
        header=Header_(stamp=Time_(12, 345), frame_id="base"),
        name=["a", "b"],
        position=[0.5, -1.25],
        velocity=[],
        effort=[],
    ).serialize(use_version_2=False)
    result = {
        "stock_received": [
            {
                "name": list(s.name),
                "position": list(s.position),
                "stamp": [s.header.stamp.sec, s.header.stamp.nanosec],
            }
            for s in stock_js[:1]
        ],
        "ours_received": [list(map(float, c.data)) for c in got_commands[:1]],
        "stock_serializer_equals_ours": bytes(stock_bytes) == js.serialize(),
        "graph": [
            {
                "node": [(n.node_namespace, n.node_name) for n in g.node_entities_info_seq],
                "gid_is_participant": ep is not None and bytes(g.gid.data) == ep.participant_key.bytes,
                "writer_is_joint_states": ep is not None
                and [bytes(w.data) for w in g.node_entities_info_seq[0].writer_gid_seq] == [ep.key.bytes],
                "n_readers": len(g.node_entities_info_seq[0].reader_gid_seq),
            }
            for g in graph[:1]
        ],
        "endpoint": None
        if ep is None
        else {
            "topic_name": ep.topic_name,
            "type_name": ep.type_name,
            "reliability": str(ep.qos[Policy.Reliability]),
            "data_representation": str(ep.qos[Policy.DataRepresentation]),
            "user_data": ep.qos[Policy.Userdata].data.decode() if Policy.Userdata in ep.qos else "",
        },
    }
    ours.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
