"""The bridge's transport over ``rclpy``: a real ROS 2 node on whatever RMW the ROS install uses.

Messages still go through :mod:`fastvla.ros2.msgs`: publishers send the CDR bytes ``serialize()`` makes
(``Publisher.publish(bytes)``) and subscriptions are ``raw=True`` and decode with ``deserialize()``, so the
bridge core sees the same dataclasses on every transport, 224x224 images are never converted to Python
lists, and the ROS message classes are used only for their type support (name, type hash, wire layout).
The node's name, parameters, QoS, graph presence (``ros2 node list``/``info``), services and actions come
from rclpy itself.

Example (needs rclpy, e.g. ``pip install ros-jazzy-rclpy ros-jazzy-rmw-fastrtps-cpp ...``)::

    import rclpy
    from fastvla.ros2.rclpy_transport import RclpyTransport

    rclpy.init()
    transport = RclpyTransport("fastvla_bridge")   # spins its node on a background thread
    bridge = PolicyBridge(policy, transport, config)
    bridge.spin(duration=60)
    transport.close()
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from fastvla.ros2.msgs import Message
from fastvla.ros2.transport import DEFAULT_QOS, QoS, TypedPublisher

RCLPY_HINT = (
    "the rclpy transport needs ROS 2's rclpy: source a ROS 2 install, or pip install ROS 2 from PyPI "
    "(scripts/ros_venv.sh jazzy|kilted shows the package set)"
)


def ros_message_class(msg_type: type[Message] | str) -> Any:
    """The rclpy message class of a :class:`Message` type (or of a ``pkg/msg/Name`` string)."""
    name = msg_type if isinstance(msg_type, str) else msg_type.ROS_TYPE
    package, kind, cls_name = name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), cls_name)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"ROS 2 type {name} is not installed ({err}); install the {package} package"
        ) from err


def qos_profile(qos: QoS) -> Any:
    """The rclpy ``QoSProfile`` of a :class:`~fastvla.ros2.transport.QoS`."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE,
        avoid_ros_namespace_conventions=qos.avoid_ros_namespace_conventions,
    )


class _RclpyPublisher(TypedPublisher):
    def __init__(self, publisher: Any, msg_type: type[Message], topic: str) -> None:
        super().__init__(topic, msg_type)
        self._publisher = publisher

    def _send(self, msg: Message) -> None:
        self._publisher.publish(msg.serialize())


class RclpyTransport:
    """:class:`~fastvla.ros2.transport.Transport` on an rclpy node (see module docstring).

    Args:
        node: an ``rclpy.node.Node``, or a node name to create one (``rclpy.init()`` must have run).
        namespace: namespace of a node created here.
        spin: spin the node on a background thread (a ``MultiThreadedExecutor``) until :meth:`close`;
            pass ``False`` when you spin it yourself.
    """

    def __init__(self, node: Any | str, namespace: str = "", spin: bool = True) -> None:
        try:
            from rclpy.executors import MultiThreadedExecutor
            from rclpy.node import Node
        except ImportError as err:
            raise ImportError(f"{RCLPY_HINT} ({err})") from err
        self.node = Node(node, namespace=namespace) if isinstance(node, str) else node
        self._own_node = isinstance(node, str)
        self.executor = None
        self._thread: threading.Thread | None = None
        if spin:
            self.executor = MultiThreadedExecutor(num_threads=2, context=self.node.context)
            self.executor.add_node(self.node)
            self._thread = threading.Thread(target=self.executor.spin, name="rclpy-spin", daemon=True)
            self._thread.start()

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = DEFAULT_QOS) -> _RclpyPublisher:
        """Create a publisher that sends ``msg.serialize()`` on ``topic``."""
        pub = self.node.create_publisher(ros_message_class(msg_type), topic, qos_profile(qos))
        return _RclpyPublisher(pub, msg_type, topic)

    def subscribe(
        self,
        topic: str,
        msg_type: type[Message],
        callback: Callable[[Message], None],
        qos: QoS = DEFAULT_QOS,
    ) -> None:
        """Call ``callback(msg_type.deserialize(raw))`` for every message on ``topic``."""
        self.node.create_subscription(
            ros_message_class(msg_type),
            topic,
            lambda raw: callback(msg_type.deserialize(raw)),
            qos_profile(qos),
            raw=True,
        )

    def close(self) -> None:
        """Stop spinning and destroy the node if it was created here."""
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
            self.executor = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._own_node:
            self.node.destroy_node()
