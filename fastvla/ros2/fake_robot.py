"""A fake ROS 2 robot for loopback tests: publishes camera images and joint states, records the commands.

Each image carries a frame id in its first pixel (``fastvla.ros2.testing.encode_frame_id``) and its
publish time (wall clock) in ``header.stamp``; with ``FrameEchoPolicy`` on the bridge, every command says
which frame it was computed from, so the robot measures image -> command latency end to end.

Run: ``python -m fastvla.ros2.fake_robot --domain-id 42 --camera /camera/front/image_raw --duration 5``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from fastvla.ros2.images import rgb_to_compressed, rgb_to_image
from fastvla.ros2.msgs import (
    CompressedImage,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    JointTrajectory,
    String,
    Time,
)
from fastvla.ros2.testing import encode_frame_id
from fastvla.ros2.transport import DEFAULT_QOS, SENSOR_QOS, Transport

logger = logging.getLogger("fastvla.ros2.fake_robot")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def run_fake_robot(
    transport: Transport,
    cameras: list[str],
    state_topic: str = "/joint_states",
    command_topic: str = "/arm_controller/commands",
    command_type: str = "float64_multi_array",
    duration: float = 5.0,
    fps: float = 30.0,
    state_hz: float = 50.0,
    image_size: int = 64,
    n_joints: int = 7,
    instruction_topic: str | None = None,
    instruction_changes: list[tuple[float, str]] | None = None,
) -> dict[str, Any]:
    """Publish sensors for ``duration`` seconds and return what came back (JSON-ready).

    Returns:
        ``frames_sent``, ``commands`` (count), ``command_rate_hz``, ``interval_s`` and ``latency_s``
        percentiles (image publish -> command receipt, matched by frame id), ``task_codes`` (the
        instruction code carried by each command, with its receipt time) and raw ``samples``.
    """
    image_pubs = [
        (topic, transport.publisher(topic, CompressedImage if _compressed(topic) else Image, SENSOR_QOS))
        for topic in cameras
    ]
    state_pub = transport.publisher(state_topic, JointState, SENSOR_QOS)
    instr_pub = transport.publisher(instruction_topic, String, DEFAULT_QOS) if instruction_topic else None
    changes = sorted(instruction_changes or [])
    sent: dict[int, int] = {}  # frame id -> publish wall ns
    got: list[tuple[int, int, int]] = []  # (recv wall ns, frame id, task code)

    def on_command(msg: Any) -> None:
        row = msg.data if isinstance(msg, Float64MultiArray) else msg.points[0].positions
        got.append((time.time_ns(), round(row[0]), round(row[1])))

    cmd_type = Float64MultiArray if command_type == "float64_multi_array" else JointTrajectory
    transport.subscribe(command_topic, cmd_type, on_command, DEFAULT_QOS)
    base = np.random.default_rng(0).integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
    names = [f"joint_{i + 1}" for i in range(n_joints)]
    start = time.monotonic()
    next_img = next_state = start
    frame_id = 0
    while (now := time.monotonic()) - start < duration:
        if changes and now - start >= changes[0][0] and instr_pub is not None and got:
            instr_pub.publish(String(data=changes.pop(0)[1]))
        if now >= next_state:
            t = now - start
            position = np.sin(t + np.arange(n_joints))
            state_pub.publish(JointState(header=Header(stamp=Time.now()), name=names, position=position))
            next_state += 1.0 / state_hz
        if now >= next_img:
            frame_id += 1
            rgb = encode_frame_id(base.copy(), frame_id)
            stamp = time.time_ns()
            for topic, pub in image_pubs:
                pub.publish(_image(topic, rgb, Header(stamp=Time.from_ns(stamp), frame_id="camera")))
            sent[frame_id] = stamp
            next_img += 1.0 / fps
        time.sleep(max(0.0, min(next_img, next_state) - time.monotonic()))
    stop_ns = time.time_ns()
    time.sleep(0.2)  # let the commands in flight arrive (but only those sent while images flowed count)
    got = [g for g in got if g[0] <= stop_ns + 50_000_000]
    latencies = [(recv - sent[f]) * 1e-9 for recv, f, _ in got if f in sent]
    recv_s = [recv * 1e-9 for recv, _, _ in got]
    intervals = np.diff(recv_s).tolist()
    span = recv_s[-1] - recv_s[0] if len(recv_s) > 1 else 0.0
    return {
        "frames_sent": frame_id,
        "last_image_ns": sent.get(frame_id),
        "commands": len(got),
        "command_rate_hz": (len(got) - 1) / span if span > 0 else 0.0,
        "interval_s": _percentiles(intervals),
        "latency_s": _percentiles(latencies),
        "task_codes": [(recv * 1e-9 - recv_s[0], code) for recv, _, code in got] if got else [],
        "samples": [{"recv_ns": r, "frame": f, "image_ns": sent.get(f)} for r, f, _ in got],
    }


def _compressed(topic: str) -> bool:
    return topic.endswith("/compressed")


def _image(topic: str, rgb: np.ndarray, header: Header | None = None) -> Image | CompressedImage:
    if _compressed(topic):
        return rgb_to_compressed(rgb, header, fmt="png")  # lossless, so the frame id survives
    return rgb_to_image(rgb, header)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the fake robot over Cyclone DDS and print/write its results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain-id", type=int, default=0)
    parser.add_argument("--network", default="loopback", choices=("loopback", "env"))
    parser.add_argument("--camera", action="append", default=[], help="image topic (repeat)")
    parser.add_argument("--state", default="/joint_states")
    parser.add_argument("--command", default="/arm_controller/commands")
    parser.add_argument("--command-type", default="float64_multi_array")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--instruction-topic", default="/fastvla_bridge/instruction")
    parser.add_argument("--instruction-at", action="append", default=[], metavar="SECONDS:TEXT")
    parser.add_argument("--out", help="write results JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from fastvla.ros2.dds import CycloneDDSTransport

    transport = CycloneDDSTransport(domain_id=args.domain_id, network=args.network)
    changes = [(float(t), text) for t, _, text in (s.partition(":") for s in args.instruction_at)]
    try:
        result = run_fake_robot(
            transport,
            args.camera or ["/camera/front/image_raw"],
            state_topic=args.state,
            command_topic=args.command,
            command_type=args.command_type,
            duration=args.duration,
            fps=args.fps,
            image_size=args.image_size,
            instruction_topic=args.instruction_topic,
            instruction_changes=changes,
        )
    finally:
        transport.close()
    text = json.dumps(result)
    if args.out:
        from fastvla.utils.io import atomic_write_text

        atomic_write_text(args.out, text)
    summary = {k: v for k, v in result.items() if k not in ("samples", "task_codes")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
