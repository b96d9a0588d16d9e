"""Loopback demo: a fake robot process and a ``fastvla ros2`` bridge process talking DDS on 127.0.0.1.

The two processes share nothing but the DDS wire: the robot publishes images and joint states, the bridge
(running ``FrameEchoPolicy``) answers with commands at the requested rate, and the run reports the command
rate and the image -> command latency (p50/p99) with its breakdown (image transport, wait for the control
tick, policy, command transport), joining the robot's and the bridge's timestamps.

Network safety: both processes use the loopback-only Cyclone configuration (no multicast, unicast peers on
127.0.0.1). Where the OS allows an unprivileged network namespace (``unshare -rn``), the whole run also
happens inside a private namespace whose only interface is its own ``lo``, so not even Cyclone's TTL-0
loopback multicast probe at start-up reaches the host's loopback.

Run: ``python -m fastvla.ros2.demo --duration 5 --rate 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.ros2.dds import loopback_config
from fastvla.ros2.testing import task_code

FRONT, WRIST = "/camera/front/image_raw", "/wrist/image_raw"
STATE, COMMAND = "/joint_states", "/arm_controller/commands"
FIRST, SECOND = "pick up the red cube", "push the blue cube"
ECHO_POLICY = "fastvla.ros2.testing:FrameEchoPolicy"
_NETNS_ENV = "FASTVLA_ROS2_NETNS"


def netns_available() -> bool:
    """Whether ``unshare -rn`` (a private network namespace) works here and ``ip`` can bring ``lo`` up."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    try:
        probe = subprocess.run(
            ["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env["CYCLONEDDS_URI"] = loopback_config()  # also set by each process before DDS starts
    env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def _run_processes(
    workdir: Path,
    duration: float,
    rate: float,
    domain_id: int,
    command_type: str,
    change_at: float | None,
    image_size: int,
    fps: float,
    policy: str,
) -> dict[str, Any]:
    py = sys.executable
    bridge_stats, robot_out = workdir / "bridge.json", workdir / "robot.json"
    bridge_cmd = [
        py, "-m", "fastvla.ros2",  # = `fastvla ros2`, without importing the other sub-commands
        "--policy", policy, "--device", "cpu",
        "--camera", f"front:={FRONT}", "--camera", f"wrist:={WRIST}",
        "--state", STATE, "--command", COMMAND, "--instruction", FIRST,
        "--rate", str(rate), "--domain-id", str(domain_id), "--command-type", command_type,
        "--max-staleness", "0.5", "--duration", str(duration + 6.0), "--stats-out", str(bridge_stats),
        "--network", "loopback", "--log-level", "INFO",
    ]  # fmt: skip
    robot_cmd = [
        py, "-m", "fastvla.ros2.fake_robot", "--domain-id", str(domain_id), "--network", "loopback",
        "--camera", FRONT, "--camera", WRIST, "--state", STATE, "--command", COMMAND,
        "--command-type", command_type, "--duration", str(duration), "--out", str(robot_out),
        "--image-size", str(image_size), "--fps", str(fps),
    ]  # fmt: skip
    if change_at is not None:
        robot_cmd += ["--instruction-at", f"{change_at}:{SECOND}"]
    env = _env(domain_id)
    with open(workdir / "bridge.log", "w") as blog, open(workdir / "robot.log", "w") as rlog:
        bridge = subprocess.Popen(bridge_cmd, env=env, stdout=blog, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(bridge, workdir / "bridge.log", timeout=90.0)
            time.sleep(0.5)  # the bridge pauses with no data yet: that is part of the demo
            subprocess.run(robot_cmd, env=env, stdout=rlog, stderr=subprocess.STDOUT, timeout=duration + 60)
            time.sleep(1.0)  # > --max-staleness: the bridge must notice the robot went quiet and pause
        finally:
            bridge.send_signal(2)  # SIGINT: stop now, write stats
            try:
                bridge.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()
    logs = {name: (workdir / f"{name}.log").read_text() for name in ("bridge", "robot")}
    if not robot_out.exists() or not bridge_stats.exists():
        raise RuntimeError(
            f"loopback demo failed; bridge log:\n{logs['bridge']}\nrobot log:\n{logs['robot']}"
        )
    result = {"robot": json.loads(robot_out.read_text()), "bridge": json.loads(bridge_stats.read_text())}
    result["logs"] = logs
    return result


def _wait_until_up(proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if " up: domain" in log.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"bridge exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"bridge not up after {timeout} s:\n{log.read_text()}")


def _stats_ms(values_ns: list[float]) -> dict[str, float]:
    arr = np.asarray(values_ns, dtype=np.float64) * 1e-6
    out: dict[str, float] = {"n": len(values_ns)}
    if len(values_ns):
        out.update(p50=float(np.percentile(arr, 50)), p99=float(np.percentile(arr, 99)))
    return out


def _breakdown(robot: dict[str, Any], bridge: dict[str, Any], echo: bool) -> dict[str, dict[str, float]]:
    """Per-stage latencies in ms.

    ``image_to_publish`` (robot publishes the front image -> bridge publishes the command) comes from the
    bridge's records alone, for any policy. With the echo policy each command names its frame, so robot
    samples are joined to bridge records on the front image stamp for the full end-to-end split.
    """
    # only commands computed while images still flowed (afterwards they act on ever older images)
    last = (robot.get("last_image_ns") or 0) + 100_000_000
    flowing = [r for r in bridge["records"] if r["publish_ns"] <= last]
    to_publish = [r["publish_ns"] - r["stamps_ns"][FRONT] for r in flowing]
    if not echo:
        policy = [r["publish_ns"] - r["tick_ns"] for r in flowing]
        return {"image_to_publish": _stats_ms(to_publish), "policy": _stats_ms(policy)}
    by_stamp: dict[int, list[dict[str, Any]]] = {}
    for rec in bridge["records"]:  # several commands may act on the same image: match them in order
        by_stamp.setdefault(rec["stamps_ns"][FRONT], []).append(rec)
    names = ("image_transport", "wait_for_tick", "policy", "command_transport", "end_to_end")
    stages: dict[str, list[float]] = {k: [] for k in names}
    for sample in robot["samples"]:
        queue = by_stamp.get(sample["image_ns"])
        if not queue:
            continue
        rec = queue.pop(0)
        stages["image_transport"].append(rec["recv_ns"][FRONT] - sample["image_ns"])
        stages["wait_for_tick"].append(rec["tick_ns"] - rec["recv_ns"][FRONT])
        stages["policy"].append(rec["publish_ns"] - rec["tick_ns"])
        stages["command_transport"].append(sample["recv_ns"] - rec["publish_ns"])
        stages["end_to_end"].append(sample["recv_ns"] - sample["image_ns"])
    out = {name: _stats_ms(values) for name, values in stages.items()}
    out["image_to_publish"] = _stats_ms(to_publish)
    return out


def run_loopback_demo(
    duration: float = 5.0,
    rate: float = 10.0,
    domain_id: int | None = None,
    command_type: str = "float64_multi_array",
    change_instruction: bool = True,
    isolate: bool = True,
    image_size: int = 64,
    fps: float = 30.0,
    policy: str = ECHO_POLICY,
) -> dict[str, Any]:
    """Run the two-process loopback demo and return rates, latencies and the instruction check.

    Args:
        duration: seconds the robot publishes.
        rate: the bridge's control rate (Hz).
        domain_id: DDS domain (default: derived from the process id, 100-199).
        command_type: ``float64_multi_array`` or ``joint_trajectory``.
        change_instruction: publish a new instruction half way and check the commands follow it.
        isolate: run inside a private network namespace when the OS allows it.
        image_size: side of the square RGB images the robot publishes on each of two cameras.
        fps: camera frame rate.
        policy: the bridge's ``--policy`` (a FastVLA policy directory, or ``module:factory``); only the
            echo policy gives per-command end-to-end latency and the instruction check.
    """
    domain_id = 100 + os.getpid() % 100 if domain_id is None else domain_id
    change_at = duration / 2 if change_instruction else None
    isolated = False
    with tempfile.TemporaryDirectory(prefix="fastvla_ros2_") as tmp:
        workdir = Path(tmp)
        if isolate and os.environ.get(_NETNS_ENV) != "1" and netns_available():
            out = workdir / "result.json"
            inner = [sys.executable, "-m", "fastvla.ros2.demo", "--inside", "--out", str(out),
                     "--duration", str(duration), "--rate", str(rate), "--domain-id", str(domain_id),
                     "--command-type", command_type,
                     "--image-size", str(image_size), "--fps", str(fps), "--policy", policy]  # fmt: skip
            inner += [] if change_instruction else ["--no-change"]
            env = dict(os.environ, **{_NETNS_ENV: "1"})
            script = 'ip link set lo up && exec "$0" "$@"'
            proc = subprocess.run(
                ["unshare", "-rn", "sh", "-c", script, *inner],
                env=env, capture_output=True, text=True, timeout=duration + 120,
            )  # fmt: skip
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"isolated loopback demo failed:\n{proc.stdout}\n{proc.stderr}")
            return json.loads(out.read_text())
        raw = _run_processes(
            workdir, duration, rate, domain_id, command_type, change_at, image_size, fps, policy
        )
        isolated = os.environ.get(_NETNS_ENV) == "1"
    robot, bridge = raw["robot"], raw["bridge"]
    codes = robot["task_codes"]
    first_code, second_code = task_code(FIRST), task_code(SECOND)
    return {
        "isolated_netns": isolated,
        "domain_id": domain_id,
        "rate_hz_requested": rate,
        "image_size": image_size,
        "command_rate_hz": robot["command_rate_hz"],
        "commands": robot["commands"],
        "frames_sent": robot["frames_sent"],
        "interval_ms": {k: v * 1e3 if k != "n" else v for k, v in robot["interval_s"].items()},
        "policy": policy,
        "latency_ms": _breakdown(robot, bridge, echo=policy == ECHO_POLICY),
        "bridge": {k: v for k, v in bridge.items() if k != "records"},
        "instruction": None
        if policy != ECHO_POLICY
        else {
            "first_commands_follow_first": bool(codes) and codes[0][1] == first_code,
            "last_commands_follow_second": bool(codes)
            and codes[-1][1] == (second_code if change_at else first_code),
            "codes_seen": sorted({c for _, c in codes}),
        },
        "bridge_log_tail": raw["logs"]["bridge"].splitlines()[-15:],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line of the demo; prints a JSON summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--domain-id", type=int)
    parser.add_argument("--command-type", default="float64_multi_array")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument(
        "--policy", default=ECHO_POLICY, help="the bridge's --policy (default: echo stand-in)"
    )
    parser.add_argument("--no-change", action="store_true", help="keep the first instruction")
    parser.add_argument("--no-isolate", action="store_true", help="skip the private network namespace")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the JSON summary here")
    args = parser.parse_args(argv)
    result = run_loopback_demo(
        duration=args.duration,
        rate=args.rate,
        domain_id=args.domain_id,
        command_type=args.command_type,
        change_instruction=not args.no_change,
        isolate=not (args.no_isolate or args.inside),
        image_size=args.image_size,
        fps=args.fps,
        policy=args.policy,
    )
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
