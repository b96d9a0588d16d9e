"""Image -> command latency of the rclpy bridge against a real rclpy robot (Fast DDS, PyPI ROS 2).

Per run, inside a private network namespace (``fastvla.ros2.rosnet``): a robot node publishes two
``sensor_msgs/Image`` cameras (rgb8, ``--size``², ``--fps``; the frame id in the front camera's first
pixel) and ``JointState`` at 50 Hz, and subscribes to the commands; ``fastvla ros2 --transport rclpy``
runs ``FrameEchoPolicy`` (echoes the frame id) at the control rate. Latency = the robot receiving a command
minus the robot publishing the frame it was computed from (one clock: same host). It splits into the
frame's age when the control tick fires (0 to one camera period, set by the phase of the two clocks) and
the bridge's own work from the tick to the publish (decode, policy, serialize).

    python benchmarks/ros2_rclpy.py                      # Jazzy and Kilted, 10 and 30 Hz
    python benchmarks/ros2_rclpy.py --distros kilted --rates 30 --duration 5

Needs ``bash scripts/ros_venv.sh all`` (``make ros-venvs``). Writes ``benchmarks/results/ros2_rclpy.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common

RESULTS = Path(__file__).with_name("results") / "ros2_rclpy.json"


def robot(duration: float, size: int, fps: float) -> dict[str, Any]:
    """The robot side (runs in a ROS venv): publish, collect commands, return the latencies."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    rclpy.init()
    node = Node("bench_robot")
    cams = [
        node.create_publisher(Image, f"/{cam}/image_raw", qos_profile_sensor_data)
        for cam in ("front", "wrist")
    ]
    joints = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    sent: dict[int, int] = {}
    latencies: list[tuple[int, int]] = []  # (frame, ns)

    def on_command(msg: Float64MultiArray) -> None:
        now, frame = time.time_ns(), int(msg.data[0])
        if frame in sent:
            latencies.append((frame, now - sent[frame]))

    node.create_subscription(Float64MultiArray, "/arm/commands", on_command, 10)
    rgb = np.full((size, size, 3), 90, dtype=np.uint8)
    state = {"frame": 0}

    def publish_frame() -> None:
        state["frame"] += 1
        frame = state["frame"]
        rgb[0, 0] = [frame & 0xFF, (frame >> 8) & 0xFF, (frame >> 16) & 0xFF]
        msg = Image(height=size, width=size, encoding="rgb8", step=3 * size, data=rgb.tobytes())
        msg.header.stamp = node.get_clock().now().to_msg()
        sent[frame] = time.time_ns()
        for pub in cams:
            pub.publish(msg)

    def publish_joints() -> None:
        js = JointState(name=["j1", "j2"], position=[0.1, 0.2])
        js.header.stamp = node.get_clock().now().to_msg()
        joints.publish(js)

    node.create_timer(1.0 / fps, publish_frame)
    node.create_timer(1.0 / 50, publish_joints)
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.01)
    node.destroy_node()
    rclpy.shutdown()
    return {"frames": state["frame"], "latency_ns": latencies}


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return {"n": 0}
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99))}


def run(distro: str, rate: float, size: int, fps: float, duration: float) -> dict[str, Any]:
    """One robot + bridge run; latencies in ms."""
    import tempfile

    from fastvla.ros2.rosnet import ros_env, run_in_netns

    env = ros_env(distro, domain_id=(os.getpid() + int(rate)) % 200 + 10)
    script = (
        "python -m fastvla.ros2 --transport rclpy --policy fastvla.ros2.testing:FrameEchoPolicy "
        "--camera front:=/front/image_raw --camera wrist:=/wrist/image_raw --state /joint_states "
        f"--command /arm/commands --rate {rate} --duration {duration + 10} --stats-out $T/stats.json "
        "--log-level ERROR & B=$!; "
        f"python benchmarks/ros2_rclpy.py --role robot --duration {duration} --size {size} --fps {fps} "
        "> $T/robot.json; kill -TERM $B; wait $B"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env["T"] = tmp
        proc = run_in_netns(script, env, timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"{distro} run failed: {proc.stderr[-2000:]}")
        robot_out = json.loads(Path(tmp, "robot.json").read_text())
        stats = json.loads(Path(tmp, "stats.json").read_text())
    lat = robot_out["latency_ns"][2:]  # the first commands wait for discovery
    records = stats["records"]
    front = "/front/image_raw"
    return {
        "distro": distro,
        "rate_hz": rate,
        "image": f"{size}x{size} rgb8 x2 at {fps:g} fps",
        "commands": len(lat),
        "frames": robot_out["frames"],
        "end_to_end_ms": pct([ns / 1e6 for _, ns in lat]),
        "frame_age_at_tick_ms": pct(  # since the bridge received it
            [(r["tick_ns"] - r["recv_ns"][front]) / 1e6 for r in records]
        ),
        "tick_to_publish_ms": pct([(r["publish_ns"] - r["tick_ns"]) / 1e6 for r in records]),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| ROS 2 | control rate | commands | image -> command p50 / p99 | frame age at tick p50 "
        "| tick -> publish p50 / p99 |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        e, a, t = r["end_to_end_ms"], r["frame_age_at_tick_ms"], r["tick_to_publish_ms"]
        lines.append(
            f"| {r['distro']} | {r['rate_hz']:g} Hz | {r['commands']} | {e['p50']:.1f} / {e['p99']:.1f} ms "
            f"| {a['p50']:.1f} ms | {t['p50']:.2f} / {t['p99']:.2f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--role", choices=["main", "robot"], default="main")
    parser.add_argument("--distros", nargs="+", default=["jazzy", "kilted"])
    parser.add_argument("--rates", nargs="+", type=float, default=[10.0, 30.0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.role == "robot":
        print(json.dumps(robot(args.duration, args.size, args.fps)))
        return
    rows = [run(d, r, args.size, args.fps, args.duration) for d in args.distros for r in args.rates]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}"
    print(f"rclpy bridge, Fast DDS, {machine}\n")
    print(table(rows))
    _common.write_json(
        args.out, {"machine": machine, "python": sys.version.split()[0], "rows": rows}, indent=1
    )


if __name__ == "__main__":
    main()
