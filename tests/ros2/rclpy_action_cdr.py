"""Serialize the action types built by scripts/ros_interfaces.sh with rclpy's real type support (ROS venv).

Prints JSON: per type, the CDR bytes (hex) of a message with the field values of ``VALUES`` in
test_action_types.py, and the REP-2016 type hash rosidl computed at build time.
"""

from __future__ import annotations

import json
import sys

from builtin_interfaces.msg import Duration
from control_msgs.action import FollowJointTrajectory as FJT
from control_msgs.msg import JointComponentTolerance, JointTolerance
from fastvla_msgs.action import RunInstruction as RI
from rclpy.serialization import serialize_message
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


def fjt_goal() -> FJT.Goal:
    goal = FJT.Goal()
    goal.trajectory = JointTrajectory(
        joint_names=["a", "b"],
        points=[JointTrajectoryPoint(positions=[0.5, -1.0], time_from_start=Duration(sec=1, nanosec=5))],
    )
    goal.trajectory.header.frame_id = "base"
    goal.path_tolerance = [JointTolerance(name="a", position=0.1, velocity=0.2, acceleration=0.3)]
    goal.component_goal_tolerance = [
        JointComponentTolerance(joint_name="b", component=JointComponentTolerance.ROTATION, position=0.05)
    ]
    goal.goal_time_tolerance = Duration(sec=2, nanosec=500)
    return goal


def main() -> dict:
    share = sys.argv[1]
    msgs = {
        "fastvla_msgs/action/RunInstruction_Goal": RI.Goal(
            instruction="pick it", time_limit=2.5, max_steps=7
        ),
        "fastvla_msgs/action/RunInstruction_Result": RI.Result(
            outcome=RI.Result.TIMED_OUT, message="time limit", steps=9, elapsed=2.75
        ),
        "fastvla_msgs/action/RunInstruction_Feedback": RI.Feedback(
            steps=3, elapsed=0.25, last_action=[1.0, -2.0]
        ),
        "control_msgs/action/FollowJointTrajectory_Goal": fjt_goal(),
        "control_msgs/action/FollowJointTrajectory_Result": FJT.Result(
            error_code=FJT.Result.GOAL_TOLERANCE_VIOLATED, error_string="b missed"
        ),
        "control_msgs/action/FollowJointTrajectory_Feedback": FJT.Feedback(
            joint_names=["a"], desired=JointTrajectoryPoint(positions=[0.25])
        ),
    }
    out = {"cdr": {name: serialize_message(msg).hex() for name, msg in msgs.items()}, "hashes": {}}
    for pkg, kind, name in [
        ("fastvla_msgs", "action", "RunInstruction"),
        ("control_msgs", "action", "FollowJointTrajectory"),
        ("control_msgs", "msg", "JointTolerance"),
        ("control_msgs", "msg", "JointComponentTolerance"),
    ]:
        with open(f"{share}/{pkg}/{kind}/{name}.json") as f:
            for entry in json.load(f)["type_hashes"]:
                out["hashes"][entry["type_name"]] = entry["hash_string"]
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
