"""Python side of the C interop check (run by test_c_interop.py inside a private network namespace)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from fastvla.ros2 import msgs as M
from fastvla.ros2.dds import CycloneDDSTransport
from fastvla.ros2.images import rgb_to_image
from fastvla.ros2.transport import SENSOR_QOS


def main(domain_id: int) -> dict:
    bus = CycloneDDSTransport(domain_id=domain_id)
    commands: list[list[float]] = []
    instructions: list[str] = []
    bus.subscribe("/arm/commands", M.Float64MultiArray, lambda m: commands.append([float(v) for v in m.data]))
    bus.subscribe("/fastvla_bridge/instruction", M.String, lambda m: instructions.append(m.data))
    js_pub = bus.publisher("/joint_states", M.JointState, SENSOR_QOS)
    img_pub = bus.publisher("/camera/image_raw", M.Image, SENSOR_QOS)
    js = M.JointState(
        header=M.Header(stamp=M.Time(12, 345), frame_id="base"), name=["a", "b"], position=[0.5, -1.25]
    )
    rgb = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(3, 4, 3)
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and not (commands and instructions):
        js_pub.publish(js)
        img_pub.publish(rgb_to_image(rgb, M.Header(frame_id="cam")))
        time.sleep(0.1)
    for _ in range(10):  # keep publishing a little so the C peer sees data even if it started late
        js_pub.publish(js)
        img_pub.publish(rgb_to_image(rgb, M.Header(frame_id="cam")))
        time.sleep(0.1)
    bus.close()
    return {"commands": commands[:1], "instructions": instructions[:1], "image_sum": int(rgb.sum())}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
