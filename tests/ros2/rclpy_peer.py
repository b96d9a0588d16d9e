"""A plain rclpy node, the way a ROS user writes one (typed messages, default RMW), for the interop tests.

Runs in a ROS venv (scripts/ros_venv.sh), never imports fastvla. Modes:

- ``echo SECONDS``: for each message type the bridge speaks, subscribe to ``/interop/in/<key>`` and
  republish what arrived on ``/interop/out/<key>`` as a new typed message (so the bytes go through the
  real type support in both directions); at the end print a JSON summary of what was received.
- ``robot SECONDS COMMAND_TYPE``: publish two cameras (``sensor_msgs/Image`` with a frame id in the first
  pixel and ``sensor_msgs/CompressedImage`` PNG), ``sensor_msgs/JointState`` and the instruction, collect
  the bridge's commands and what the rclpy graph API says about the bridge; print JSON.
- ``action_client SECONDS``: the robot's sensors plus an ``ActionClient`` driving the bridge's
  ``fastvla_msgs/action/RunInstruction`` server: a goal that succeeds, one that times out, one cancelled.
- ``fjt_server SECONDS N``: the robot's sensors plus a ``control_msgs/action/FollowJointTrajectory`` server
  (as ``joint_trajectory_controller`` serves) that records N goals; goal 3 is rejected, goal 4 fails.
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


class Robot:
    """Publishes two cameras (frame id in the first pixel; PNG wrist), joint states and the instruction."""

    def __init__(
        self, node: Node, instruction: str | None = "stack the green cube", hz: float = 20.0
    ) -> None:
        self.node, self.instruction, self.frame = node, instruction, 0
        self.front = node.create_publisher(Image, "/camera/front/image_raw", qos_profile_sensor_data)
        self.wrist = node.create_publisher(CompressedImage, "/wrist/image_raw/compressed", 10)  # reliable
        self.joints = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.instr = node.create_publisher(String, "/fastvla_bridge/instruction", 10)
        self.wrist_png = png(np.full((16, 16, 3), 7, dtype=np.uint8))
        self.timer = node.create_timer(1.0 / hz, self.publish)

    def publish(self) -> None:
        self.frame += 1
        stamp = self.node.get_clock().now().to_msg()
        rgb = np.full((32, 32, 3), 40, dtype=np.uint8)
        rgb[0, 0] = [self.frame & 0xFF, (self.frame >> 8) & 0xFF, 0]
        img = Image(height=32, width=32, encoding="rgb8", step=96, data=rgb.tobytes())
        img.header.stamp, img.header.frame_id = stamp, "front"
        self.front.publish(img)
        comp = CompressedImage(format="png", data=self.wrist_png)
        comp.header.stamp = stamp
        self.wrist.publish(comp)
        js = JointState(name=["j1", "j2"], position=[0.25, -0.5])
        js.header.stamp = stamp
        self.joints.publish(js)
        if self.instruction is not None:
            self.instr.publish(String(data=self.instruction))


def spin_for(node: Node, seconds: float, until=lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        rclpy.spin_once(node, timeout_sec=0.01)


def graph_of(node: Node) -> dict:
    topics = dict(node.get_topic_names_and_types())
    return {
        "nodes": sorted(f"{ns.rstrip('/')}/{name}" for name, ns in node.get_node_names_and_namespaces()),
        "topics": {t: topics.get(t) for t in ("/arm/commands", "/fastvla_bridge/instruction")},
        "bridge_publishes": node.get_publisher_names_and_types_by_node("fastvla_bridge", "/"),
        "bridge_subscribes": node.get_subscriber_names_and_types_by_node("fastvla_bridge", "/"),
    }


def robot(node: Node, seconds: float, command_type: str) -> dict:
    commands: list = []
    cmd_cls = Float64MultiArray if command_type == "float64_multi_array" else JointTrajectory
    node.create_subscription(
        cmd_cls, "/arm/commands", lambda m: commands.append(summary(command_type, m)), 10
    )
    bot = Robot(node)
    spin_for(node, seconds, until=lambda: len(commands) >= 5)
    return {"commands": commands, "frames_sent": bot.frame, "graph": graph_of(node)}


def action_client(node: Node, seconds: float) -> dict:
    """Drive the bridge's RunInstruction server: succeed (max_steps), time out, cancel."""
    from action_msgs.msg import GoalStatus
    from fastvla_msgs.action import RunInstruction
    from rclpy.action import ActionClient

    commands: list = []
    node.create_subscription(Float64MultiArray, "/arm/commands", lambda m: commands.append(list(m.data)), 10)
    Robot(node, instruction=None)
    client = ActionClient(node, RunInstruction, "/fastvla_bridge/run_instruction")
    assert client.wait_for_server(timeout_sec=seconds), "no RunInstruction server"
    spin_for(node, 1.0)  # sensors flowing, no goal yet: the bridge must stay idle
    idle_commands = len(commands)
    runs = {}
    for name, goal, cancel_after in [
        (
            "succeed",
            RunInstruction.Goal(instruction="pick up the red cube", max_steps=5, time_limit=20.0),
            None,
        ),
        ("time_out", RunInstruction.Goal(instruction="push the blue cube", time_limit=0.6), None),
        ("cancel", RunInstruction.Goal(instruction="open the drawer"), 0.6),
    ]:
        feedback: list = []
        send = client.send_goal_async(goal, feedback_callback=lambda f, fb=feedback: fb.append(f.feedback))
        rclpy.spin_until_future_complete(node, send, timeout_sec=10)
        handle = send.result()
        first_command = len(commands)
        if cancel_after is not None:
            # cancel a goal that is running: its first command may be late on a loaded machine
            spin_for(node, seconds, until=lambda n=first_command: len(commands) > n)
            spin_for(node, cancel_after)
            cancel = handle.cancel_goal_async()
            rclpy.spin_until_future_complete(node, cancel, timeout_sec=10)
        result_future = handle.get_result_async()
        rclpy.spin_until_future_complete(node, result_future, timeout_sec=30)
        response = result_future.result()
        spin_for(node, 0.3)
        runs[name] = {
            "accepted": handle.accepted,
            "status": {
                GoalStatus.STATUS_SUCCEEDED: "succeeded",
                GoalStatus.STATUS_CANCELED: "canceled",
                GoalStatus.STATUS_ABORTED: "aborted",
            }.get(response.status, response.status),
            "outcome": response.result.outcome,
            "message": response.result.message,
            "steps": response.result.steps,
            "elapsed": response.result.elapsed,
            "feedback": [[f.steps, f.elapsed, list(f.last_action)] for f in feedback],
            "commands": commands[first_command:],
        }
    spin_for(node, 0.5)
    return {"idle_commands_before_goal": idle_commands, "runs": runs, "commands_after": len(commands)}


def fjt_server(node: Node, seconds: float, goals_wanted: int) -> dict:
    """A FollowJointTrajectory server like joint_trajectory_controller's; goal 3 is rejected, goal 4 fails."""
    from control_msgs.action import FollowJointTrajectory
    from rclpy.action import ActionServer, GoalResponse

    goals: list = []
    finished: list = []  # goals whose execute callback has ended (the rejected one never runs)

    def on_goal(request):
        goals.append(summary("joint_trajectory", request.trajectory))
        return GoalResponse.REJECT if len(goals) == 3 else GoalResponse.ACCEPT

    def execute(handle):
        result = FollowJointTrajectory.Result()
        if len(finished) == 2:  # the third goal executed is goal 4 (goal 3 was rejected)
            result.error_code = FollowJointTrajectory.Result.PATH_TOLERANCE_VIOLATED
            result.error_string = "j1 off the path by 0.3 rad"
            handle.abort()
        else:
            feedback = FollowJointTrajectory.Feedback(joint_names=list(handle.request.trajectory.joint_names))
            handle.publish_feedback(feedback)
            handle.succeed()
        finished.append(len(goals))
        return result

    ActionServer(
        node, FollowJointTrajectory, "/arm_controller/follow_joint_trajectory", execute, goal_callback=on_goal
    )
    Robot(node)
    spin_for(node, seconds, until=lambda: len(goals) >= goals_wanted)
    # every accepted goal has ended here before the bridge is stopped (a loaded machine runs them late) ...
    spin_for(node, seconds, until=lambda: len(finished) >= goals_wanted - 1)
    spin_for(node, 2.0)  # ... and its result has time to reach the bridge
    return {"goals": goals}


def main() -> None:
    mode, seconds = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = Node("interop_peer")
    try:
        if mode == "echo":
            result = echo(node, seconds)
        elif mode == "robot":
            result = robot(node, seconds, sys.argv[3])
        elif mode == "action_client":
            result = action_client(node, seconds)
        else:
            result = fjt_server(node, seconds, int(sys.argv[3]))
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
