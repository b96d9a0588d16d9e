"""A plain rclpy node, the way a ROS user writes one (typed messages, default RMW), for the interop tests.

Runs in a ROS venv (scripts/ros_venv.sh), never imports fastvla. Modes:

- ``echo SECONDS``: for each message type the bridge speaks, subscribe to ``/interop/in/<key>`` and
  republish what arrived on ``/interop/out/<key>`` as a new typed message (so the bytes go through the
  real type support in both directions); at the end print a JSON summary of what was received.
- ``robot SECONDS COMMAND_TYPE``: publish two cameras (``sensor_msgs/Image`` with a frame id in the first
  pixel and ``sensor_msgs/CompressedImage`` PNG), ``sensor_msgs/JointState`` and the instruction, collect
  the bridge's commands and what the rclpy graph API says about the bridge; print JSON.
"""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

TYPES = {
    "image": Image,
    "compressed_image": CompressedImage,
    "joint_state": JointState,
    "string": String,
    "float64_multi_array": Float64MultiArray,
    "joint_trajectory": JointTrajectory,
}


def copy_message(msg):
    """A fresh typed message with the same field values (set field by field, nested types recursed)."""
    out = type(msg)()
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if hasattr(value, "get_fields_and_field_types"):
            value = copy_message(value)
        elif isinstance(value, list) and value and hasattr(value[0], "get_fields_and_field_types"):
            value = [copy_message(v) for v in value]
        setattr(out, name, value)
    return out


def summary(key: str, msg) -> list:
    """A few typed field values, so the test checks what rclpy itself decoded."""
    stamp = [msg.header.stamp.sec, msg.header.stamp.nanosec] if hasattr(msg, "header") else None
    if key == "image":
        return [stamp, msg.header.frame_id, msg.height, msg.width, msg.encoding, msg.step, sum(msg.data)]
    if key == "compressed_image":
        return [stamp, msg.format, len(msg.data)]
    if key == "joint_state":
        return [stamp, list(msg.name), list(msg.position), list(msg.velocity), list(msg.effort)]
    if key == "string":
        return [msg.data]
    if key == "float64_multi_array":
        return [[(d.label, d.size, d.stride) for d in msg.layout.dim], list(msg.data)]
    points = [
        [list(p.positions), list(p.velocities), p.time_from_start.sec, p.time_from_start.nanosec]
        for p in msg.points
    ]
    return [stamp, list(msg.joint_names), points]


def echo(node: Node, seconds: float) -> dict:
    seen: dict[str, list] = {}
    pubs = {key: node.create_publisher(cls, f"/interop/out/{key}", 10) for key, cls in TYPES.items()}

    def handler(key):
        def callback(msg):
            seen.setdefault(key, summary(key, msg))
            pubs[key].publish(copy_message(msg))

        return callback

    for key, cls in TYPES.items():
        node.create_subscription(cls, f"/interop/in/{key}", handler(key), 10)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(seen) < len(TYPES):
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 1.0  # keep answering re-sends for a moment
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    return {"seen": seen}


def png(rgb: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def robot(node: Node, seconds: float, command_type: str) -> dict:
    front = node.create_publisher(Image, "/camera/front/image_raw", qos_profile_sensor_data)
    wrist = node.create_publisher(CompressedImage, "/wrist/image_raw/compressed", 10)  # reliable camera
    joints = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    instruction = node.create_publisher(String, "/fastvla_bridge/instruction", 10)
    commands: list = []
    cmd_cls = Float64MultiArray if command_type == "float64_multi_array" else JointTrajectory
    node.create_subscription(
        cmd_cls, "/arm/commands", lambda m: commands.append(summary(command_type, m)), 10
    )
    wrist_png = png(np.full((16, 16, 3), 7, dtype=np.uint8))
    graph: dict = {}
    frame, period, next_pub = 0, 0.05, time.monotonic()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(commands) < 5:
        if time.monotonic() >= next_pub:
            frame += 1
            stamp = node.get_clock().now().to_msg()
            rgb = np.full((32, 32, 3), 40, dtype=np.uint8)
            rgb[0, 0] = [frame & 0xFF, (frame >> 8) & 0xFF, 0]
            img = Image(height=32, width=32, encoding="rgb8", step=96, data=rgb.tobytes())
            img.header.stamp, img.header.frame_id = stamp, "front"
            front.publish(img)
            comp = CompressedImage(format="png", data=wrist_png)
            comp.header.stamp = stamp
            wrist.publish(comp)
            js = JointState(name=["j1", "j2"], position=[0.25, -0.5])
            js.header.stamp = stamp
            joints.publish(js)
            instruction.publish(String(data="stack the green cube"))
            next_pub += period
        rclpy.spin_once(node, timeout_sec=0.01)
    nodes = node.get_node_names_and_namespaces()
    topics = dict(node.get_topic_names_and_types())
    graph = {
        "nodes": sorted(f"{ns.rstrip('/')}/{name}" for name, ns in nodes),
        "topics": {t: topics.get(t) for t in ("/arm/commands", "/fastvla_bridge/instruction")},
        "bridge_publishes": node.get_publisher_names_and_types_by_node("fastvla_bridge", "/"),
        "bridge_subscribes": node.get_subscriber_names_and_types_by_node("fastvla_bridge", "/"),
    }
    return {"commands": commands, "frames_sent": frame, "graph": graph}


def main() -> None:
    mode, seconds = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = Node("interop_peer")
    try:
        result = echo(node, seconds) if mode == "echo" else robot(node, seconds, sys.argv[3])
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
