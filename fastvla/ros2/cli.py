"""``fastvla ros2``: run a policy as a ROS 2 node (rclpy where ROS 2 is installed, else Cyclone DDS).

Example:
    fastvla ros2 --policy outputs/pick_cube \\
        --camera front:=/camera/front/image_raw --camera wrist:=/wrist/image_raw \\
        --state /joint_states --command /arm_controller/commands \\
        --instruction "pick up the red cube" --rate 10

With rclpy importable (``--transport auto``, the default) the bridge is an ordinary rclpy node on the
installed RMW: nothing to set on the ROS side but the same ``ROS_DOMAIN_ID``. With ``--transport cyclone``
(no ROS install): ``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp`` on the ROS side and (with the default
``--network loopback``) ``CYCLONEDDS_URI`` pointing at the file ``fastvla ros2 --print-dds-config``
writes. See docs/ros2.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fastvla.ros2.bridge import COMMAND_TYPES, BridgeConfig
from fastvla.ros2.dds import INSTALL_HINT, NETWORK_MODES, loopback_config

logger = logging.getLogger("fastvla.ros2")
GID_DISTROS = ("humble", "iron", "jazzy", "kilted", "lyrical")  # fastvla.ros2.graph.GID_SIZES (not imported)
TRANSPORTS = ("auto", "rclpy", "cyclone")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def parse_camera(spec: str) -> tuple[str, str]:
    """``front:=/camera/front/image_raw`` (ROS remapping syntax; ``front=/topic`` also works)."""
    name, sep, topic = spec.partition(":=")
    if not sep:
        name, sep, topic = spec.partition("=")
    if not sep or not name or not topic:
        raise argparse.ArgumentTypeError(
            f"camera {spec!r} must be NAME:=TOPIC, e.g. front:=/camera/front/image_raw"
        )
    return name, topic


def load_policy(
    spec: str,
    cameras: list[str],
    instruction: str,
    device: str | None,
    load_in_4bit: bool = False,
    n_action_steps: int | None = None,
) -> Any:
    """Load ``spec``: a ``FastVLAPolicy`` directory, or ``module:factory`` returning any policy object.

    A FastVLA policy gets an observation map for the bridge's observation layout (``pixels/<cam>``,
    ``agent_pos``); the ``--camera`` names must be the model's camera names.
    """
    if not Path(spec).exists() and _FACTORY.match(spec):
        module_name, _, attr = spec.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj() if callable(obj) else obj
    if not Path(spec).exists():
        raise SystemExit(f"--policy {spec!r}: no such directory (nor a module:factory like pkg.mod:Policy)")
    from fastvla import policies  # lazy: pulls in torch and the model

    cams = {cam: f"pixels/{cam}" for cam in cameras}
    return policies.FastVLAPolicy.from_pretrained(
        spec,
        device=device,
        load_in_4bit=load_in_4bit,
        n_action_steps=n_action_steps,
        obs_map=policies.ObservationMap(cameras=cams, state="agent_pos", instruction=instruction),
    )


def resolve_transport(choice: str) -> str:
    """``auto`` -> ``rclpy`` where ``import rclpy`` can work, else ``cyclone``."""
    if choice != "auto":
        return choice
    return "rclpy" if importlib.util.find_spec("rclpy") is not None else "cyclone"


def _require_dds() -> None:
    if importlib.util.find_spec("cyclonedds") is None:
        raise SystemExit(
            f"fastvla ros2 needs the Cyclone DDS Python package, which is not installed. "
            f"Install the ROS 2 extra: {INSTALL_HINT}"
        )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fastvla ros2``."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_dds_config:
        sys.stdout.write(loopback_config())
        return 0
    if not args.policy:
        raise SystemExit("--policy is required (a FastVLAPolicy directory or module:factory)")
    if not args.camera:
        raise SystemExit("give at least one --camera NAME:=TOPIC, e.g. --camera front:=/camera/image_raw")
    if not 0 <= args.domain_id <= 232:
        raise SystemExit(f"--domain-id {args.domain_id} out of range; ROS 2 uses 0-232 (ROS_DOMAIN_ID)")
    cameras = dict(args.camera)
    try:
        config = _config(args, cameras)
        args.transport = resolve_transport(args.transport)
        if args.transport == "cyclone":
            if config.action_server or config.command_type == "follow_joint_trajectory":
                raise ValueError(
                    "ROS 2 actions (--action-server, --command-type follow_joint_trajectory) need the rclpy "
                    "transport: install ROS 2 (or its PyPI wheels) and use --transport rclpy"
                )
            _require_dds()
        policy = load_policy(
            args.policy, list(cameras), args.instruction, args.device, args.load_in_4bit, args.n_action_steps
        )
    except ValueError as err:  # bad topic names, rates, cameras that don't match the model: no traceback
        raise SystemExit(f"fastvla ros2: {err}") from err
    return _serve(args, config, policy)


def _config(args: argparse.Namespace, cameras: dict[str, str]) -> BridgeConfig:
    return BridgeConfig(
        cameras=cameras,
        state_topic=args.state,
        command_topic=args.command,
        instruction=args.instruction,
        instruction_topic=args.instruction_topic,
        rate=args.rate,
        command_type=args.command_type,
        max_staleness=args.max_staleness,
        joint_names=tuple(n for n in (args.joint_names or "").split(",") if n),
        chunk_dt=args.chunk_dt,
        node_name=args.node_name,
        action_server=args.action_server,
    )


def _serve(args: argparse.Namespace, config: BridgeConfig, policy: Any) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.transport == "rclpy":
        from fastvla.ros2.node import serve

        logger.info(
            "up (rclpy node /%s, domain %d): cameras %s, state %s -> %s (%s) at %.1f Hz",
            config.node_name,
            args.domain_id,
            config.cameras,
            config.state_topic,
            config.command_topic,
            config.command_type,
            config.rate,
        )
        stats = serve(policy, config, domain_id=args.domain_id, duration=args.duration or None, stop=stop)
    else:
        stats = _serve_cyclone(args, config, policy, stop)
    summary = stats.to_dict()
    logger.info(
        "bridge stopped: %d ticks, %d commands, %d paused %s",
        stats.ticks,
        stats.published,
        stats.paused,
        summary["pause_reasons"],
    )
    if args.stats_out:
        from fastvla.utils.io import atomic_write_text

        atomic_write_text(args.stats_out, json.dumps(summary))
    return 0


def _serve_cyclone(args: argparse.Namespace, config: BridgeConfig, policy: Any, stop: threading.Event) -> Any:
    from fastvla.ros2.bridge import PolicyBridge
    from fastvla.ros2.dds import CycloneDDSTransport

    transport = CycloneDDSTransport(domain_id=args.domain_id, network=args.network)
    try:
        bridge = PolicyBridge(policy, transport, config)
        if args.ros_distro != "none":  # after the bridge's endpoints exist: they are listed in the message
            from fastvla.ros2.graph import announce_node

            announce_node(transport, config.node_name, distro=args.ros_distro)
        logger.info(
            "up: domain %d (%s network), cameras %s, state %s -> %s (%s) at %.1f Hz; instruction: %s",
            args.domain_id,
            args.network,
            config.cameras,
            config.state_topic,
            config.command_topic,
            config.command_type,
            config.rate,
            config.instruction_topic,
        )
        return bridge.spin(duration=args.duration or None, stop=stop)
    finally:
        transport.close()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla ros2`` (imports nothing heavy: DDS and torch load when the command runs)."""
    parser = subparsers.add_parser(
        "ros2",
        help="run a policy as a ROS 2 node (DDS; no ROS install needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", help="FastVLAPolicy directory, or module:factory for any policy object")
    parser.add_argument(
        "--camera",
        action="append",
        type=parse_camera,
        default=[],
        metavar="NAME:=TOPIC",
        help="model camera and its sensor_msgs/Image topic (a topic ending in /compressed is read as "
        "CompressedImage); repeat per camera",
    )
    parser.add_argument("--state", default="/joint_states", help="sensor_msgs/JointState topic")
    parser.add_argument("--command", default="/arm_controller/commands", help="command topic to publish")
    parser.add_argument("--instruction", default="", help="initial language instruction")
    parser.add_argument(
        "--instruction-topic",
        default="~/instruction",
        help="std_msgs/String topic that changes it at run time",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="control rate in Hz")
    parser.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", "0") or 0),
        help="ROS 2 domain id (default: $ROS_DOMAIN_ID or 0)",
    )
    parser.add_argument("--command-type", choices=COMMAND_TYPES, default="float64_multi_array")
    parser.add_argument(
        "--max-staleness", type=float, default=0.5, help="pause commands when an input is older (seconds)"
    )
    parser.add_argument(
        "--joint-names", help="comma-separated joints to read from JointState, in model order"
    )
    parser.add_argument("--chunk-dt", type=float, help="seconds between trajectory points (default 1/rate)")
    parser.add_argument("--node-name", default="fastvla_bridge", help="node name ('~' in topic names)")
    parser.add_argument(
        "--action-server",
        action="store_true",
        help="serve fastvla_msgs/action/RunInstruction on ~/run_instruction (rclpy transport): commands are "
        "published only while a goal runs",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="rclpy: a ROS 2 node on the installed ROS 2 (any RMW; Fast DDS by default); cyclone: FastVLA's "
        "own Cyclone DDS stack, no ROS install (talks to rmw_cyclonedds_cpp peers only); auto: rclpy when "
        "importable, else cyclone",
    )
    parser.add_argument(
        "--network",
        choices=NETWORK_MODES,
        default="loopback",
        help="loopback: DDS on 127.0.0.1 only, no multicast (default); env: use $CYCLONEDDS_URI or "
        "Cyclone's defaults (all interfaces, multicast discovery) to reach other machines",
    )
    parser.add_argument(
        "--ros-distro",
        choices=[*GID_DISTROS, "none"],
        default=os.environ.get("ROS_DISTRO") if os.environ.get("ROS_DISTRO") in GID_DISTROS else "jazzy",
        help="distro of the ROS side, for the node announcement on ros_discovery_info (its layout differs "
        "in Humble); 'none' skips it (default: $ROS_DISTRO or jazzy)",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)"
    )
    parser.add_argument("--stats-out", help="write counters and per-command timings (JSON) here on exit")
    parser.add_argument("--device", help="torch device for the policy (default: the policy's choice)")
    parser.add_argument(
        "--load-in-4bit", action="store_true", help="quantise the FastVLA policy to NF4 on load"
    )
    parser.add_argument(
        "--n-action-steps", type=int, help="actions executed per predicted chunk (float64_multi_array mode)"
    )
    parser.add_argument(
        "--print-dds-config", action="store_true", help="print the loopback Cyclone XML and exit"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)
    return parser
