"""The bridge as an rclpy node: ``PolicyBridge`` on :class:`RclpyTransport`, with ROS parameters.

This is what ``fastvla ros2 --transport rclpy`` runs (the default wherever ``import rclpy`` works). The
node is a normal ROS 2 node on the ROS install's RMW (Fast DDS by default): ``ros2 node list`` / ``info``
show it with its topics, ``ros2 param get /fastvla_bridge rate`` reads its (read-only) configuration.
With ``config.action_server`` it serves ``fastvla_msgs/action/RunInstruction``; with ``command_type
"follow_joint_trajectory"`` it sends chunks to a controller's FollowJointTrajectory action
(:mod:`fastvla.ros2.actions`).

Example (inside a ROS 2 environment)::

    from fastvla.ros2.bridge import BridgeConfig
    from fastvla.ros2.node import serve
    from fastvla.ros2.testing import FrameEchoPolicy

    stats = serve(FrameEchoPolicy(), BridgeConfig(cameras={"front": "/camera/image_raw"}), duration=10)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from fastvla.ros2.bridge import BridgeConfig, BridgeStats, PolicyBridge

logger = logging.getLogger("fastvla.ros2")


def config_parameters(config: BridgeConfig) -> dict[str, Any]:
    """The config as ROS parameter values (``cameras.<name>`` per camera; unset/empty fields left out)."""
    params: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "cameras":
            params.update({f"cameras.{cam}": topic for cam, topic in value.items()})
        elif isinstance(value, tuple):
            if value:
                params[f.name] = list(value)
        elif value is not None:
            params[f.name] = value
    return params


def declare_config(node: Any, config: BridgeConfig) -> None:
    """Declare the config on ``node`` as read-only parameters (what the running bridge uses)."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, value in config_parameters(config).items():
        node.declare_parameter(name, value, ParameterDescriptor(read_only=True))


def serve(
    policy: Any,
    config: BridgeConfig,
    domain_id: int | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_ready: Any = None,
) -> BridgeStats:
    """Run the bridge as an rclpy node until ``duration`` seconds pass or ``stop`` is set.

    Args:
        policy: the policy object (see :class:`~fastvla.ros2.bridge.Policy`).
        config: topics, rate and limits; ``config.node_name`` is the node's name.
        domain_id: ROS domain (default: ``$ROS_DOMAIN_ID``, as every ROS 2 node).
        duration: seconds to run (``None``: until ``stop``).
        stop: set it to stop (e.g. from a signal handler).
        on_ready: called with ``(node, bridge)`` once the node's endpoints exist (e.g. to add an action
            server).
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from fastvla.ros2.rclpy_transport import RclpyTransport

    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    transport = None
    try:
        from rclpy.node import Node

        node = Node(config.node_name, context=context)
        declare_config(node, config)
        transport = RclpyTransport(node)
        sink, extra = None, {}
        if config.command_type == "follow_joint_trajectory":
            from fastvla.ros2.actions import FollowJointTrajectorySink

            sink = FollowJointTrajectorySink(node, config.command_topic, stats=extra)
        bridge = PolicyBridge(policy, transport, config, command_sink=sink)
        bridge.stats.extra.update(extra)
        if config.action_server:
            from fastvla.ros2.actions import InstructionActionServer

            InstructionActionServer(node, bridge)
        if on_ready is not None:
            on_ready(node, bridge)
        return bridge.spin(duration=duration, stop=stop)
    finally:
        if transport is not None:
            transport.close()
            transport.node.destroy_node()
        rclpy.shutdown(context=context)
