"""Configs of the ROS 2 bridge: :class:`BridgeConfig` (topics, rate, limits) and :class:`Ros2Config` (the
``fastvla ros2`` command: which policy, which transport, plus a :class:`BridgeConfig`).

The command's flags are generated from these fields (:mod:`fastvla.utils.flags`), as for every other
``fastvla`` command; the bridge's fields are flattened (``--rate``, not ``--bridge.rate``) and nest under
``bridge:`` in a ``--config`` file. The short flags of earlier releases (``--camera``, ``--state``,
``--command``) stay as aliases of ``--cameras``, ``--state-topic`` and ``--command-topic``.

This module imports neither DDS, rclpy nor torch, so building the parser stays fast.

Example:
    >>> cfg = BridgeConfig(cameras={"front": "/cam"}, rate=5.0)
    >>> cfg.instruction_topic  # "~" expands to the node name
    '/fastvla_bridge/instruction'
    >>> Ros2Config(policy="outputs/pick", bridge=cfg).bridge.rate
    5.0
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from typing import Literal

from fastvla.ros2.transport import resolve_topic
from fastvla.utils.config import ConfigMixin, check, config_field, nested_from_dicts

CommandType = Literal["float64_multi_array", "joint_trajectory", "follow_joint_trajectory"]
COMMAND_TYPES: tuple[str, ...] = typing.get_args(CommandType)
TransportChoice = Literal["auto", "rclpy", "cyclone"]
TRANSPORTS: tuple[str, ...] = typing.get_args(TransportChoice)
# Layouts of ros_discovery_info the Cyclone transport can announce itself in (fastvla.ros2.graph.GID_SIZES,
# not imported here: it pulls in the message definitions), and "none" to skip the announcement.
DistroChoice = Literal["humble", "iron", "jazzy", "kilted", "lyrical", "none"]
GID_DISTROS: tuple[str, ...] = tuple(d for d in typing.get_args(DistroChoice) if d != "none")
DEFAULT_DISTRO = "jazzy"
MAX_DOMAIN_ID = 232  # the largest ROS_DOMAIN_ID ROS 2 maps to DDS ports


@dataclass
class BridgeConfig(ConfigMixin):
    """Topics, rate and safety limits of the bridge (each field documented in its ``help``).

    ``command_type`` is ``"float64_multi_array"`` (one action per tick, for ros2_control's
    ``forward_command_controller``), ``"joint_trajectory"`` (the action chunk, published on a topic for
    ``joint_trajectory_controller``) or ``"follow_joint_trajectory"`` (the chunk sent as a
    ``control_msgs/action/FollowJointTrajectory`` goal to ``command_topic``, the controller's
    ``~/follow_joint_trajectory`` action; rclpy transport only). Topic names are resolved as ``rcl`` does
    (``~`` expands to ``/<node_name>``) when the config is built.
    """

    cameras: dict[str, str] = config_field(
        help="Model camera name -> sensor_msgs/Image topic, as NAME:=TOPIC (repeat the flag or separate "
        "with commas; a topic ending in /compressed is read as CompressedImage), e.g. "
        "front:=/camera/front/image_raw.",
        aliases=("--camera",),
        metavar="NAME:=TOPIC",
    )
    state_topic: str = config_field("/joint_states", "sensor_msgs/JointState topic.", aliases=("--state",))
    command_topic: str = config_field(
        "/arm_controller/commands",
        "Where commands go: a topic, or the FollowJointTrajectory action's name.",
        aliases=("--command",),
    )
    instruction: str = config_field("", "Initial language instruction.")
    instruction_topic: str = config_field(
        "~/instruction", "std_msgs/String topic that replaces the instruction at run time."
    )
    rate: float = config_field(10.0, "Control rate in Hz.")
    command_type: CommandType = config_field(
        "float64_multi_array",
        "float64_multi_array: one action per tick; joint_trajectory: the predicted chunk on a topic; "
        "follow_joint_trajectory: the chunk as an action goal (rclpy transport).",
    )
    max_staleness: float = config_field(
        0.5,
        "Seconds after which an input is too old to act on (and the largest allowed spread between the "
        "sensors' header stamps): commands pause.",
    )
    joint_names: tuple[str, ...] = config_field(
        (),
        "Joints to read from JointState, in model order (comma-separated; empty = all, in message "
        "order); also the trajectory's joint_names.",
    )
    chunk_dt: float | None = config_field(None, "Seconds between trajectory points; None = 1 / rate.")
    node_name: str = config_field("fastvla_bridge", "ROS node name ('~' in topic names expands to it).")
    check_stamps: bool = config_field(
        True,
        "Also pause when the inputs' header stamps span more than max_staleness (turn off when sensors "
        "stamp with different clocks, e.g. sim time on some and wall time on others).",
    )
    action_server: bool = config_field(
        False,
        "Serve fastvla_msgs/action/RunInstruction on ~/run_instruction (rclpy transport); commands are "
        "published only while a goal runs.",
    )

    def __post_init__(self) -> None:
        check(
            bool(self.cameras),
            "no cameras given; map at least one, e.g. {'front': '/camera/front/image_raw'} "
            "(--camera front:=/camera/front/image_raw)",
        )
        check(self.rate > 0, f"rate {self.rate} Hz must be > 0 (e.g. 10)")
        check(self.max_staleness > 0, f"max_staleness {self.max_staleness} s must be > 0 (e.g. 0.5)")
        check(
            self.command_type in COMMAND_TYPES,
            f"command_type {self.command_type!r} unknown; choose one of {COMMAND_TYPES}",
        )
        check(self.chunk_dt is None or self.chunk_dt > 0, f"chunk_dt {self.chunk_dt} s must be > 0")
        resolve = lambda name: resolve_topic(name, self.node_name)  # noqa: E731
        self.cameras = {cam: resolve(topic) for cam, topic in self.cameras.items()}
        self.state_topic = resolve(self.state_topic)
        self.command_topic = resolve(self.command_topic)
        self.instruction_topic = resolve(self.instruction_topic)
        self.joint_names = tuple(self.joint_names)


@dataclass
class Ros2Config(ConfigMixin):
    """``fastvla ros2``: a policy served as a ROS 2 node, over rclpy or FastVLA's own Cyclone DDS stack."""

    policy: str = config_field(help="FastVLAPolicy directory, or module:factory for any policy object.")
    bridge: BridgeConfig = field(metadata={"help": "Topics, rate and limits", "flatten": True})
    transport: TransportChoice = config_field(
        "auto",
        "rclpy: a ROS 2 node on the installed ROS 2 (any RMW; Fast DDS by default); cyclone: FastVLA's own "
        "Cyclone DDS stack, no ROS install (talks to rmw_cyclonedds_cpp peers only); auto: rclpy when "
        "importable, else cyclone.",
    )
    network: Literal["loopback", "env"] = config_field(
        "loopback",
        "Cyclone transport: loopback = DDS on 127.0.0.1 only, no multicast; env = $CYCLONEDDS_URI or "
        "Cyclone's defaults (all interfaces, multicast discovery) to reach other machines.",
    )
    domain_id: int | None = config_field(None, "ROS 2 domain id; None = $ROS_DOMAIN_ID, else 0.")
    ros_distro: DistroChoice | None = config_field(
        None,
        "Cyclone transport: distro of the ROS side, for the node announcement on ros_discovery_info (its "
        f"layout differs in Humble); 'none' skips it; None = $ROS_DISTRO if known, else {DEFAULT_DISTRO}.",
    )
    duration: float = config_field(0.0, "Stop after this many seconds (0: run until Ctrl-C).")
    stats_out: str | None = config_field(None, "Write counters and per-command timings (JSON) here on exit.")
    device: str | None = config_field(None, "Torch device of a FastVLA policy; None = the policy's choice.")
    load_in_4bit: bool = config_field(False, "Quantise a FastVLA policy to NF4 on load.")
    n_action_steps: int | None = config_field(
        None, "Actions executed per predicted chunk (float64_multi_array); None = the policy's setting."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = config_field("INFO", "Logging level.")

    def __post_init__(self) -> None:
        nested_from_dicts(self)
        check(
            self.domain_id is None or 0 <= self.domain_id <= MAX_DOMAIN_ID,
            f"--domain-id {self.domain_id} out of range; ROS 2 uses 0-{MAX_DOMAIN_ID} (ROS_DOMAIN_ID)",
        )
        check(self.duration >= 0, f"duration={self.duration} s; must be >= 0 (0: until Ctrl-C)")

    def resolved_domain_id(self) -> int:
        """``domain_id``, else ``$ROS_DOMAIN_ID``, else 0."""
        if self.domain_id is not None:
            return self.domain_id
        text = os.environ.get("ROS_DOMAIN_ID", "").strip() or "0"
        check(
            text.isdigit() and int(text) <= MAX_DOMAIN_ID,
            f"ROS_DOMAIN_ID={text!r} is not a domain id; ROS 2 uses 0-{MAX_DOMAIN_ID}",
        )
        return int(text)

    def resolved_ros_distro(self) -> str:
        """``ros_distro``, else ``$ROS_DISTRO`` when it is one the announcement knows, else jazzy."""
        if self.ros_distro is not None:
            return self.ros_distro
        env = os.environ.get("ROS_DISTRO", "")
        return env if env in GID_DISTROS else DEFAULT_DISTRO
