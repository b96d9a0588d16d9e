"""FastVLA's side of the per-type interop check (runs in a ROS venv with the repo on PYTHONPATH).

Publishes one sample of every message type the bridge speaks through :class:`RclpyTransport` (our CDR
bytes) to ``/interop/in/<key>``, where ``rclpy_peer.py echo`` decodes it with the real type support and
republishes a fresh typed copy on ``/interop/out/<key>``, which we decode with ``fastvla.ros2.msgs``.
Prints JSON: per key, whether the echo came back equal (re-serialized bytes) and whether the raw bytes
rclpy sent equal ours.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import rclpy

from fastvla.ros2 import msgs as M
from fastvla.ros2.images import rgb_to_compressed
from fastvla.ros2.rclpy_transport import RclpyTransport, ros_message_class


def samples() -> dict[str, M.Message]:
    header = M.Header(stamp=M.Time(1_700_000_123, 456_789), frame_id="cam_front")
    rgb = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
    point = lambda i: M.JointTrajectoryPoint(  # noqa: E731
        positions=[0.1 * i, -0.2 * i, 1.5],
        velocities=[0.0, 0.5, -0.25],
        time_from_start=M.Duration(sec=i, nanosec=250_000_000),
    )
    return {
        "image": M.Image(header=header, height=24, width=32, encoding="rgb8", step=96, data=rgb.tobytes()),
        "compressed_image": rgb_to_compressed(rgb, header=header, fmt="png"),
        "joint_state": M.JointState(
            header=header,
            name=["shoulder", "elbow", "gripper"],
            position=[0.5, -1.25, 0.04],
            velocity=[0.0, 0.1, 0.0],
            effort=[],
        ),
        "string": M.String(data="pick up the red cube — déjà vu"),
        "float64_multi_array": M.Float64MultiArray.from_array(
            np.arange(6, dtype=np.float64).reshape(2, 3) - 2.5, labels=("chunk", "action")
        ),
        "joint_trajectory": M.JointTrajectory(
            header=header, joint_names=["a", "b", "c"], points=[point(1), point(2), point(3)]
        ),
    }


def main(seconds: float) -> dict:
    rclpy.init()
    transport = RclpyTransport("interop_fastvla")
    sent = samples()
    got: dict[str, bytes] = {}
    lock = threading.Lock()
    pubs = {key: transport.publisher(f"/interop/in/{key}", type(msg)) for key, msg in sent.items()}
    for key, msg in sent.items():
        # raw subscription on the transport's node: we want rclpy's bytes as they arrived
        def on_raw(raw: bytes, key: str = key) -> None:
            with lock:
                got.setdefault(key, bytes(raw))

        transport.node.create_subscription(
            ros_message_class(type(msg)),
            f"/interop/out/{key}",
            on_raw,
            10,
            raw=True,
        )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(got) < len(sent):
        for key, msg in sent.items():
            if key not in got:
                pubs[key].publish(msg)
        time.sleep(0.2)
    result = {}
    for key, msg in sent.items():
        raw = got.get(key)
        if raw is None:
            result[key] = {"received": False}
            continue
        echoed = type(msg).deserialize(raw)
        result[key] = {
            "received": True,
            "equal": echoed.serialize() == msg.serialize(),
            "bytes_identical": raw == msg.serialize(),
        }
    transport.close()
    rclpy.shutdown()
    return result


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]))))
