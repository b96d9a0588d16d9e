"""Real ROS 2 (rclpy + rmw_fastrtps_cpp from PyPI, Jazzy and Kilted) <-> the bridge's rclpy transport.

Each test runs two processes from ``.venv-ros-<distro>`` (``scripts/ros_venv.sh``) inside a private
network namespace with multicast on its own ``lo`` (``fastvla.ros2.rosnet``): a plain rclpy node with
typed messages (``rclpy_peer.py``) and FastVLA's side. Skips, saying why, where the venv or the namespace
can't be had.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from fastvla.ros2.rosnet import DISTROS, netns_unavailable, ros_env, ros_venv_missing, run_in_netns
from fastvla.ros2.testing import task_code

TYPES = ["image", "compressed_image", "joint_state", "string", "float64_multi_array", "joint_trajectory"]


def ros_setup(distro: str, offset: int) -> dict[str, str]:
    for reason in (netns_unavailable(), ros_venv_missing(distro)):
        if reason:
            print(f"SKIP: {reason}")
            pytest.skip(reason)
    return ros_env(distro, domain_id=(os.getpid() + offset) % 200 + 10)


def last_json(proc) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("distro", DISTROS)
def test_every_message_type_both_directions(distro: str) -> None:
    env = ros_setup(distro, 0)
    script = (
        "python tests/ros2/rclpy_peer.py echo 25 > $T/peer.json & P=$!; "
        "python tests/ros2/rclpy_roundtrip.py 20; wait $P; cat $T/peer.json"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env["T"] = tmp
        proc = run_in_netns(script, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, peer = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    for key in TYPES:
        # our bytes -> rclpy typed message -> fresh typed message -> rclpy bytes -> our decoder, equal
        assert ours[key]["received"] and ours[key]["equal"], (key, ours[key])
    seen = peer["seen"]
    stamp = [1_700_000_123, 456_789]
    assert seen["image"] == [stamp, "cam_front", 24, 32, "rgb8", 96, 283365]
    assert seen["compressed_image"][:2] == [stamp, "png"]
    assert seen["joint_state"] == [
        stamp,
        ["shoulder", "elbow", "gripper"],
        [0.5, -1.25, 0.04],
        [0, 0.1, 0],
        [],
    ]
    assert seen["string"] == ["pick up the red cube — déjà vu"]
    assert seen["float64_multi_array"] == [
        [["chunk", 2, 6], ["action", 3, 3]],
        [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5],
    ]
    assert seen["joint_trajectory"][1] == ["a", "b", "c"]
    assert [p[2:] for p in seen["joint_trajectory"][2]] == [
        [1, 250_000_000],
        [2, 250_000_000],
        [3, 250_000_000],
    ]


BRIDGE = (
    "python -m fastvla.ros2 --transport rclpy --policy fastvla.ros2.testing:FrameEchoPolicy "
    "--camera front:=/camera/front/image_raw --camera wrist:=/wrist/image_raw/compressed "
    "--state /joint_states --command /arm/commands --instruction 'pick up the red cube' --rate 20 "
    "--duration 40 --stats-out $T/stats.json --log-level WARNING --command-type {cmd} 2> $T/bridge.log & "
    "B=$!; python tests/ros2/rclpy_peer.py robot 25 {cmd} > $T/peer.json; kill -TERM $B; wait $B; "
    "cat $T/peer.json"
)


@pytest.mark.parametrize("command_type", ["float64_multi_array", "joint_trajectory"])
@pytest.mark.parametrize("distro", DISTROS)
def test_bridge_node_serves_an_rclpy_robot(distro: str, command_type: str) -> None:
    env = ros_setup(distro, 1 if command_type == "float64_multi_array" else 2)
    with tempfile.TemporaryDirectory() as tmp:
        env["T"] = tmp
        proc = run_in_netns(BRIDGE.format(cmd=command_type), env)
        result = last_json(proc)
        with open(f"{tmp}/stats.json") as f:
            stats = json.load(f)
    commands = result["commands"]
    assert len(commands) >= 5, (result, stats)
    instruction = float(task_code("stack the green cube"))
    if command_type == "float64_multi_array":
        layout, data = commands[-1]
        assert layout == [["action", 4, 4]]
        frame, code, *state = data
        assert 1 <= frame <= result["frames_sent"] and code == instruction and state == [0.25, -0.5]
    else:
        _stamp, names, points = commands[-1]
        assert names == ["j1", "j2", "joint_2", "joint_3"] and len(points) == 4  # chunk of 4
        positions = points[0][0]
        assert positions[1] == instruction and positions[2:] == [0.25, -0.5]
        assert [p[2] * 10**9 + p[3] for p in points] == [50_000_000 * (i + 1) for i in range(4)]
    assert stats["received"]["/wrist/image_raw/compressed"] >= 1  # the PNG camera was decoded too
    graph = result["graph"]
    assert "/fastvla_bridge" in graph["nodes"]
    expected_cmd = (
        "std_msgs/msg/Float64MultiArray"
        if command_type == "float64_multi_array"
        else ("trajectory_msgs/msg/JointTrajectory")
    )
    assert graph["topics"] == {
        "/arm/commands": [expected_cmd],
        "/fastvla_bridge/instruction": ["std_msgs/msg/String"],
    }
    assert ["/arm/commands", [expected_cmd]] in graph["bridge_publishes"]
    assert sorted(graph["bridge_subscribes"]) == [
        ["/camera/front/image_raw", ["sensor_msgs/msg/Image"]],
        ["/fastvla_bridge/instruction", ["std_msgs/msg/String"]],
        ["/joint_states", ["sensor_msgs/msg/JointState"]],
        ["/wrist/image_raw/compressed", ["sensor_msgs/msg/CompressedImage"]],
    ]


def run_bridge_with_peer(env: dict[str, str], bridge_args: str, peer_args: str) -> tuple[dict, dict, str]:
    """Start ``fastvla ros2`` (rclpy transport, echo policy), run the peer, stop the bridge; return both."""
    script = (
        "python -m fastvla.ros2 --transport rclpy --policy fastvla.ros2.testing:FrameEchoPolicy "
        "--camera front:=/camera/front/image_raw --camera wrist:=/wrist/image_raw/compressed "
        f"--state /joint_states --duration 60 --stats-out $T/stats.json {bridge_args} 2> $T/bridge.log & "
        f"B=$!; python tests/ros2/rclpy_peer.py {peer_args} > $T/peer.json; kill -TERM $B; wait $B; "
        "cat $T/peer.json"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env["T"] = tmp
        proc = run_in_netns(script, env)
        with open(f"{tmp}/bridge.log") as f:
            log = f.read()
        result = last_json(proc)
        with open(f"{tmp}/stats.json") as f:
            stats = json.load(f)
    return result, stats, log


@pytest.mark.parametrize("distro", DISTROS)
def test_run_instruction_action_goal_feedback_result_cancel(distro: str) -> None:
    env = ros_setup(distro, 3)
    result, _stats, log = run_bridge_with_peer(
        env, "--command /arm/commands --rate 20 --action-server --log-level INFO", "action_client 20"
    )
    assert result["idle_commands_before_goal"] == 0  # no goal, no commands
    runs = result["runs"]
    ok, timed_out, cancelled = runs["succeed"], runs["time_out"], runs["cancel"]
    assert (ok["status"], ok["outcome"], ok["steps"]) == ("succeeded", 0, 5), ok
    assert (timed_out["status"], timed_out["outcome"]) == ("aborted", 1), timed_out
    assert 0.6 <= timed_out["elapsed"] < 3.0 and timed_out["steps"] >= 1  # loose: 2 shared cores in CI
    assert (cancelled["status"], cancelled["outcome"], cancelled["message"]) == ("canceled", 2, "cancelled")
    for name, run in runs.items():
        assert run["accepted"] and run["feedback"], name
        steps, elapsed, last_action = run["feedback"][-1]
        assert 0 <= steps <= run["steps"] and 0 <= elapsed <= run["elapsed"]
        assert len(last_action) == 4 and last_action[2:] == [0.25, -0.5]
    # each goal's commands were computed with its instruction (the echo policy's second number)
    codes = {name: {c[1] for c in run["commands"]} for name, run in runs.items()}
    assert codes["succeed"] == {float(task_code("pick up the red cube"))}, codes
    assert float(task_code("push the blue cube")) in codes["time_out"]
    assert float(task_code("open the drawer")) in codes["cancel"]
    assert "goal 'open the drawer' ended: cancelled" in log


@pytest.mark.parametrize("distro", DISTROS)
def test_follow_joint_trajectory_client_surfaces_results_and_errors(distro: str) -> None:
    env = ros_setup(distro, 4)
    result, stats, log = run_bridge_with_peer(
        env,
        "--command /arm_controller/follow_joint_trajectory --command-type follow_joint_trajectory --rate 10",
        "fjt_server 20 6",
    )
    goals = result["goals"]
    assert len(goals) >= 6
    _stamp, names, points = goals[-1]
    assert names == ["j1", "j2", "joint_2", "joint_3"] and len(points) == 4  # the chunk, as the trajectory
    assert points[0][0][2:] == [0.25, -0.5] and points[1][0][2] == pytest.approx(0.251)
    assert [p[2] * 10**9 + p[3] for p in points] == [100_000_000 * (i + 1) for i in range(4)]
    counts = stats["follow_joint_trajectory"]["counts"]
    assert (
        counts["sent"] >= 6 and counts["rejected"] == 1 and counts["failed"] == 1 and counts["succeeded"] >= 3
    )
    assert {"kind": "aborted", "error_code": -4, "error_string": "j1 off the path by 0.3 rad"} in stats[
        "follow_joint_trajectory"
    ]["errors"]
    assert "goal rejected" in log and "j1 off the path by 0.3 rad" in log
