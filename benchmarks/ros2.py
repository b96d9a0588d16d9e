"""ROS 2 bridge benchmark: image -> command latency over Cyclone DDS (loopback) vs an in-process baseline.

DDS rows run the two-process loopback demo (``fastvla.ros2.demo``: a fake robot publishing two cameras at
``--fps`` and joint states at 50 Hz, the ``fastvla ros2`` bridge with the ``FrameEchoPolicy`` stand-in at
``--rate``), inside a private network namespace when available. Latency is from the robot publishing an
image to the robot receiving the command computed from it, split into image transport, wait for the
control tick (the newest image's age when the tick fires: at most one camera period), policy (+ image
decode + serialization) and command transport.

The baseline row runs the same bridge over the in-process transport (same CDR encode/decode, no DDS, no
second process): the cost of the bridge itself.

    python benchmarks/ros2.py              # or: fastvla bench ros2
    python benchmarks/ros2.py --sizes 64 480 --duration 6
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.ros2 import msgs as M
from fastvla.ros2.bridge import BridgeConfig, PolicyBridge
from fastvla.ros2.demo import run_loopback_demo
from fastvla.ros2.images import rgb_to_image
from fastvla.ros2.testing import FrameEchoPolicy, encode_frame_id
from fastvla.ros2.transport import InProcessTransport

import _common


def in_process_baseline(image_size: int, n: int = 200) -> dict[str, Any]:
    """Publish two camera images + joint state, tick, time until the command callback (no DDS)."""
    bus = InProcessTransport()
    cfg = BridgeConfig(cameras={"front": "/front", "wrist": "/wrist"}, command_topic="/cmd", rate=10.0)
    bridge = PolicyBridge(FrameEchoPolicy(), bus, cfg)
    done: list[int] = []
    bus.subscribe("/cmd", M.Float64MultiArray, lambda m: done.append(time.perf_counter_ns()))
    pubs = {t: bus.publisher(t, M.Image) for t in ("/front", "/wrist")}
    state = bus.publisher("/joint_states", M.JointState)
    rgb = np.random.default_rng(0).integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
    names = [f"joint_{i}" for i in range(7)]
    lat = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        img = rgb_to_image(encode_frame_id(rgb.copy(), i + 1))
        for pub in pubs.values():
            pub.publish(img)
        state.publish(M.JointState(name=names, position=np.zeros(7)))
        assert bridge.tick()
        lat.append((done[-1] - t0) * 1e-6)
    arr = np.asarray(lat[10:])
    return {
        "transport": "in-process (baseline)",
        "image_size": image_size,
        "commands": n,
        "command_rate_hz": None,
        "latency_ms": {
            "end_to_end": {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99))}
        },
    }


def dds_row(
    image_size: int, duration: float, rate: float, fps: float, policy: str | None = None
) -> dict[str, Any]:
    """One loopback run over Cyclone DDS (echo stand-in policy unless ``policy`` is a model folder)."""
    extra = {"policy": policy} if policy else {}
    res = run_loopback_demo(
        duration=duration, rate=rate, image_size=image_size, fps=fps, change_instruction=False, **extra
    )
    keep = ("commands", "command_rate_hz", "interval_ms", "latency_ms", "isolated_netns", "frames_sent")
    out = {k: res[k] for k in keep}
    out["images_received"] = res["bridge"]["received"].get("/camera/front/image_raw", 0)
    name = "Cyclone DDS, tiny FastVLA" if policy else "Cyclone DDS, 2 processes"
    return {"transport": name, "image_size": image_size, **out}


def _fmt(stage: dict[str, Any], key: str) -> str:
    return f"{stage[key]:.2f}" if stage.get(key) is not None else "-"


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per run: rate and latency percentiles (ms)."""
    head = (
        f"{'transport':<26} {'image':>7} {'cmds':>5} {'Hz':>6} {'e2e p50':>8} {'e2e p99':>8} "
        f"{'img p50':>8} {'wait p50':>8} {'policy':>7} {'cmd p50':>8} {'img->pub p50/p99':>17}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        lat = r["latency_ms"]
        e2e, pub = lat.get("end_to_end", {}), lat.get("image_to_publish", {})
        to_pub = f"{_fmt(pub, 'p50')}/{_fmt(pub, 'p99')}" if pub else "-"
        rate = f"{r['command_rate_hz']:.2f}" if r["command_rate_hz"] else "-"
        size = f"{r['image_size']}²x2"
        stages = [
            _fmt(lat.get(k, {}), "p50")
            for k in ("image_transport", "wait_for_tick", "policy", "command_transport")
        ]
        if "p99" in lat.get("policy", {}) and "end_to_end" not in lat:  # real model: show the tail too
            stages[2] = f"{lat['policy']['p50']:.1f}/{lat['policy']['p99']:.0f}"
        print(
            f"{r['transport']:<26} {size:>7} {r['commands']:>5} {rate:>6} {_fmt(e2e, 'p50'):>8} "
            f"{_fmt(e2e, 'p99'):>8} {stages[0]:>8} {stages[1]:>8} {stages[2]:>7} {stages[3]:>8} {to_pub:>17}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224, 480], help="image sides (px)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per DDS run")
    parser.add_argument("--rate", type=float, default=10.0, help="control rate (Hz)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (Hz)")
    parser.add_argument("--no-model", action="store_true", help="skip the tiny FastVLA (CPU inference) row")
    parser.add_argument("--json", default="benchmarks/results/ros2.json", help="where to write results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # other work on the machine inflates p99: record it
    rows = []
    for size in args.sizes:
        rows.append(in_process_baseline(size))
        rows.append(dds_row(size, args.duration, args.rate, args.fps))
    if not args.no_model:
        with tempfile.TemporaryDirectory() as tmp:
            policy = _common.save_tiny_policy(Path(tmp), image_size=64, state_dim=7)
            rows.append(dds_row(64, args.duration, args.rate, args.fps, policy=str(policy)))
    print_table(rows)
    print(f"\nload average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
        "args": vars(args),
        "rows": rows,
    }
    _common.write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
