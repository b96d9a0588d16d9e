"""The action types built with rosidl (fastvla/ros2/interfaces) against an independent reference: rosbags.

rclpy's real type support (Fast DDS CDR, in the ROS venvs) serializes Goal/Result/Feedback messages of
``fastvla_msgs/action/RunInstruction`` and ``control_msgs/action/FollowJointTrajectory``; rosbags serializes
the same values from the same ``.action`` text; the bytes must be equal and so must the REP-2016 type
hashes rosidl computed at build time and rosbags computes. The control_msgs field lists are the upstream
ones (ros-controls/control_msgs, Jazzy/Kilted branches), so the layout a real joint_trajectory_controller
uses is the one checked here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fastvla.ros2.rosnet import DISTROS, REPO, ros_env, ros_venv, ros_venv_missing

rosbags_typesys = pytest.importorskip("rosbags.typesys")
INTERFACES = REPO / "fastvla" / "ros2" / "interfaces"


def typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in sorted(INTERFACES.glob("*/msg/*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{path.parts[-3]}/msg/{path.stem}"))
    store.register(types)
    for path in sorted(INTERFACES.glob("*/action/*.action")):
        # a bare type name in an .action is in the package's msg/ (rosidl); rosbags needs it spelled out
        text = re.sub(
            r"^(JointTolerance|JointComponentTolerance)", r"control_msgs/msg/\1", path.read_text(), flags=re.M
        )
        parts = text.split("\n---\n")
        for suffix, text in zip(("Goal", "Result", "Feedback"), parts, strict=True):
            store.register(get_types_from_msg(text, f"{path.parts[-3]}/action/{path.stem}_{suffix}"))
    return store


def reference_messages(store) -> dict:
    m = store.types
    dur = m["builtin_interfaces/msg/Duration"]
    point = m["trajectory_msgs/msg/JointTrajectoryPoint"]
    f64 = lambda *v: np.array(v, dtype=np.float64)  # noqa: E731
    empty = f64()
    header = m["std_msgs/msg/Header"](
        stamp=m["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="base"
    )
    no_header = m["std_msgs/msg/Header"](
        stamp=m["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""
    )
    traj = m["trajectory_msgs/msg/JointTrajectory"](
        header=header,
        joint_names=["a", "b"],
        points=[point(f64(0.5, -1.0), empty, empty, empty, dur(sec=1, nanosec=5))],
    )
    multi = m["trajectory_msgs/msg/MultiDOFJointTrajectory"](header=no_header, joint_names=[], points=[])
    tol = m["control_msgs/msg/JointTolerance"](name="a", position=0.1, velocity=0.2, acceleration=0.3)
    ctol = m["control_msgs/msg/JointComponentTolerance"](
        joint_name="b", component=5, position=0.05, velocity=0.0, acceleration=0.0
    )
    multi_point = m["trajectory_msgs/msg/MultiDOFJointTrajectoryPoint"](
        transforms=[], velocities=[], accelerations=[], time_from_start=dur(sec=0, nanosec=0)
    )
    no_point = point(empty, empty, empty, empty, dur(sec=0, nanosec=0))
    ri, fjt = "fastvla_msgs/action/RunInstruction", "control_msgs/action/FollowJointTrajectory"
    return {
        f"{ri}_Goal": m[f"{ri}_Goal"](instruction="pick it", time_limit=2.5, max_steps=7),
        f"{ri}_Result": m[f"{ri}_Result"](outcome=1, message="time limit", steps=9, elapsed=2.75),
        f"{ri}_Feedback": m[f"{ri}_Feedback"](steps=3, elapsed=0.25, last_action=f64(1.0, -2.0)),
        f"{fjt}_Goal": m[f"{fjt}_Goal"](
            trajectory=traj,
            multi_dof_trajectory=multi,
            path_tolerance=[tol],
            component_path_tolerance=[],
            goal_tolerance=[],
            component_goal_tolerance=[ctol],
            goal_time_tolerance=dur(sec=2, nanosec=500),
        ),
        f"{fjt}_Result": m[f"{fjt}_Result"](error_code=-5, error_string="b missed"),
        f"{fjt}_Feedback": m[f"{fjt}_Feedback"](
            header=no_header,
            joint_names=["a"],
            desired=point(f64(0.25), empty, empty, empty, dur(sec=0, nanosec=0)),
            actual=no_point,
            error=no_point,
            multi_dof_joint_names=[],
            multi_dof_desired=multi_point,
            multi_dof_actual=multi_point,
            multi_dof_error=multi_point,
        ),
    }


@pytest.mark.parametrize("distro", DISTROS)
def test_action_types_match_rosbags_bytes_and_hashes(distro: str) -> None:
    reason = ros_venv_missing(distro)
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    venv = ros_venv(distro)
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(Path(__file__).with_name("rclpy_action_cdr.py")),
            str(venv / "share"),
        ],
        capture_output=True,
        text=True,
        env=ros_env(distro, domain_id=0),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    store = typestore()
    for name, msg in reference_messages(store).items():
        ours = bytes.fromhex(real["cdr"][name])
        ref = bytes(store.serialize_cdr(msg, name))
        # Alignment padding is unspecified in CDR (Fast CDR leaves stale buffer bytes there), and rclpy's
        # serialize_message may return bytes past the message's end (Fast CDR's buffer; readers ignore them):
        # so decode the message's extent with rosbags, re-encode, and compare.
        assert ours[:2] == ref[:2] == b"\0\1" and len(ours) >= len(ref), name
        assert bytes(store.serialize_cdr(store.deserialize_cdr(ours[: len(ref)], name), name)) == ref, name
    checked = []
    for type_name, hash_string in real["hashes"].items():
        ours_pkg = type_name.startswith(("fastvla_msgs/", "control_msgs/"))
        if not ours_pkg or (
            "/action/" in type_name and not type_name.endswith(("_Goal", "_Result", "_Feedback"))
        ):
            continue  # other packages' types, and the generated service/feedback wrappers of the action
        assert store.hash_rihs01(type_name) == hash_string, type_name
        checked.append(type_name)
    assert len(checked) == 8, checked  # 2 x Goal/Result/Feedback + JointTolerance + JointComponentTolerance
