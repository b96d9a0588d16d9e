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

Every flag is a field of :class:`~fastvla.ros2.config.Ros2Config` (the bridge's topics and limits, a
:class:`~fastvla.ros2.config.BridgeConfig`, flattened into it): ``--config FILE`` reads them from YAML/JSON
(flags given override the file), ``--print-config`` / ``--save-config FILE`` write the resolved config.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fastvla.errors import UserError
from fastvla.ros2.config import GID_DISTROS, TRANSPORTS, BridgeConfig, Ros2Config
from fastvla.ros2.dds import INSTALL_HINT, loopback_config
from fastvla.utils.flags import add_command, add_config_arguments, config_from_args, handle_config_output

__all__ = ["GID_DISTROS", "TRANSPORTS", "add_parser", "load_policy", "resolve_transport", "run", "run_config"]

logger = logging.getLogger("fastvla.ros2")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


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
        raise UserError(f"--policy {spec!r}: no such directory (nor a module:factory like pkg.mod:Policy)")
    from fastvla import policies  # start-up time: torch and the model load only when a checkpoint is served

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
        raise UserError(
            f"fastvla ros2 needs the Cyclone DDS Python package, which is not installed. "
            f"Install the ROS 2 extra: {INSTALL_HINT}"
        )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fastvla ros2``: the config from the flags (and ``--config``), then the bridge."""
    if args.print_dds_config:
        sys.stdout.write(loopback_config())
        return 0
    # A missing flag, bad topic names or rates raise ValueError: `fastvla` prints it as one line, exit 2.
    config = config_from_args(args, Ros2Config)
    if handle_config_output(args, config):
        return 0
    return run_config(config)


def run_config(config: Ros2Config) -> int:
    """Load ``config.policy`` and serve it as a ROS 2 node until stopped (Ctrl-C or ``duration``)."""
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bridge = config.bridge
    # Cameras that don't match the model or a bad $ROS_DOMAIN_ID raise ValueError: one line, exit 2.
    domain_id = config.resolved_domain_id()
    transport = resolve_transport(config.transport)
    if transport == "cyclone":
        if bridge.action_server or bridge.command_type == "follow_joint_trajectory":
            raise ValueError(
                "ROS 2 actions (--action-server, --command-type follow_joint_trajectory) need the rclpy "
                "transport: install ROS 2 (or its PyPI wheels) and use --transport rclpy"
            )
        _require_dds()
    policy = load_policy(
        config.policy,
        list(bridge.cameras),
        bridge.instruction,
        config.device,
        config.load_in_4bit,
        config.n_action_steps,
    )
    return _serve(config, transport, domain_id, policy)


def _serve(config: Ros2Config, transport: str, domain_id: int, policy: Any) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bridge = config.bridge
    if transport == "rclpy":
        from fastvla.ros2.node import serve  # start-up time: only the chosen transport loads

        logger.info(
            "up (rclpy node /%s, domain %d): cameras %s, state %s -> %s (%s) at %.1f Hz",
            bridge.node_name,
            domain_id,
            bridge.cameras,
            bridge.state_topic,
            bridge.command_topic,
            bridge.command_type,
            bridge.rate,
        )
        stats = serve(policy, bridge, domain_id=domain_id, duration=config.duration or None, stop=stop)
    else:
        stats = _serve_cyclone(config, domain_id, policy, stop)
    summary = stats.to_dict()
    logger.info(
        "bridge stopped: %d ticks, %d commands, %d paused %s",
        stats.ticks,
        stats.published,
        stats.paused,
        summary["pause_reasons"],
    )
    if config.stats_out:
        from fastvla.utils.io import atomic_write_text

        atomic_write_text(config.stats_out, json.dumps(summary))
    return 0


def _serve_cyclone(config: Ros2Config, domain_id: int, policy: Any, stop: threading.Event) -> Any:
    from fastvla.ros2.bridge import PolicyBridge  # start-up time: numpy and the message codecs
    from fastvla.ros2.dds import CycloneDDSTransport

    bridge: BridgeConfig = config.bridge
    transport = CycloneDDSTransport(domain_id=domain_id, network=config.network)
    try:
        node = PolicyBridge(policy, transport, bridge)
        distro = config.resolved_ros_distro()
        if distro != "none":  # after the bridge's endpoints exist: they are listed in the message
            from fastvla.ros2.graph import announce_node

            announce_node(transport, bridge.node_name, distro=distro)
        logger.info(
            "up: domain %d (%s network), cameras %s, state %s -> %s (%s) at %.1f Hz; instruction: %s",
            domain_id,
            config.network,
            bridge.cameras,
            bridge.state_topic,
            bridge.command_topic,
            bridge.command_type,
            bridge.rate,
            bridge.instruction_topic,
        )
        return node.spin(duration=config.duration or None, stop=stop)
    finally:
        transport.close()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla ros2`` (imports nothing heavy: DDS and torch load when the command runs).

    The flags come from :class:`~fastvla.ros2.config.Ros2Config`; ``--print-dds-config`` is an action, not
    configuration, so it is added here and needs no other flag.
    """
    help_text = "run a policy as a ROS 2 node (DDS; no ROS install needed)"
    parser = add_command(subparsers, "ros2", help_text, __doc__, run)
    add_config_arguments(parser, Ros2Config)
    parser.add_argument(
        "--print-dds-config", action="store_true", help="print the loopback Cyclone XML and exit"
    )
    return parser
