"""The control node: newest synchronised observation in, one command out per control tick.

``PolicyBridge`` subscribes to one image topic per camera (``sensor_msgs/Image``, or
``sensor_msgs/CompressedImage`` when the topic ends in ``/compressed``) and to ``sensor_msgs/JointState``,
and at a fixed rate builds a Gymnasium-style observation ``{"pixels": {cam: uint8 (H, W, 3)},
"agent_pos": float32 (S,)}`` (the layout of ``fastvla.envs``, so a policy's default observation map fits),
runs the policy and publishes ``std_msgs/Float64MultiArray`` (one action) or
``trajectory_msgs/JointTrajectory`` (the predicted chunk). It pauses (publishes nothing) and logs why when
a topic has never been received, is older than ``max_staleness``, or the sensors' header stamps disagree by
more than ``max_staleness``, and drops a command whose inputs went stale while the policy computed it;
the policy is reset when it resumes and when the instruction changes.

Example:
    >>> from fastvla.ros2.transport import InProcessTransport
    >>> from fastvla.ros2.testing import FrameEchoPolicy
    >>> cfg = BridgeConfig(cameras={"front": "/cam"}, instruction="pick up the red cube")
    >>> bridge = PolicyBridge(FrameEchoPolicy(), InProcessTransport(), cfg)
    >>> bridge.tick()  # nothing received yet: paused
    False
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fastvla.ros2.config import BridgeConfig
from fastvla.ros2.images import to_rgb
from fastvla.ros2.msgs import (
    CompressedImage,
    Duration,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    Message,
    String,
)
from fastvla.ros2.transport import DEFAULT_QOS, SENSOR_QOS, Transport

logger = logging.getLogger("fastvla.ros2")

_REPEAT_LOG_S = 5.0


class Policy(Protocol):
    """What the bridge needs from a policy (``FastVLAPolicy`` satisfies it; see docs/interfaces.md)."""

    def reset(self) -> None: ...

    def select_action(self, obs: dict[str, Any], task: str | None = None) -> np.ndarray: ...


@dataclass
class BridgeStats:
    """Counters of a running bridge; ``records`` keeps the newest per-command timings (wall-clock ns)."""

    ticks: int = 0
    published: int = 0
    paused: int = 0
    pause_reasons: Counter = field(default_factory=Counter)
    policy_errors: int = 0
    received: Counter = field(default_factory=Counter)
    records: deque = field(default_factory=lambda: deque(maxlen=10_000))
    extra: dict = field(default_factory=dict)  # more JSON-ready entries (a callable is called in to_dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary plus the per-command records."""
        return {
            "ticks": self.ticks,
            "published": self.published,
            "paused": self.paused,
            "pause_reasons": dict(self.pause_reasons),
            "policy_errors": self.policy_errors,
            "received": dict(self.received),
            "records": list(self.records),
            **{key: value() if callable(value) else value for key, value in self.extra.items()},
        }


class PolicyBridge:
    """Runs ``policy`` against ROS 2 topics through ``transport`` (see module docstring).

    Args:
        policy: object with ``reset()``, ``select_action(obs, task=None)`` and, for trajectory commands,
            ``predict_action_chunk(obs, task=None)``.
        transport: a :class:`~fastvla.ros2.transport.Transport` (Cyclone DDS or in-process).
        config: topics, rate and limits.
        clock: monotonic clock in seconds (injectable for tests).
        command_sink: where commands go instead of a ``command_topic`` publisher (anything with
            ``publish(msg)``; e.g. :class:`fastvla.ros2.actions.FollowJointTrajectorySink`).

    Attributes:
        active: when ``False`` the bridge idles (publishes nothing; the RunInstruction action server
            switches it on for the duration of a goal).
        command_budget: commands still allowed before the bridge idles (``None``: no limit). The
            RunInstruction server sets it to a goal's ``max_steps``, so the limit holds in the control
            loop itself, however late the goal's own polling notices it.
        last_action: the newest action published (``None`` before the first).
    """

    def __init__(
        self,
        policy: Policy,
        transport: Transport,
        config: BridgeConfig,
        clock: Any = time.monotonic,
        command_sink: Any = None,
    ) -> None:
        if config.command_type != "float64_multi_array" and not hasattr(policy, "predict_action_chunk"):
            raise TypeError(
                f"{type(policy).__name__} has no predict_action_chunk(); use --command-type "
                "float64_multi_array or a FastVLAPolicy"
            )
        self.policy, self.transport, self.config, self.clock = policy, transport, config, clock
        self.instruction = config.instruction
        self.stats = BridgeStats()
        self._latest: dict[str, tuple[float, int, Message]] = {}  # topic -> (recv mono, recv wall ns, msg)
        self._pending_instruction: str | None = None
        self._reset_requested = False
        self.active = True
        self.command_budget: int | None = None
        self.last_action: np.ndarray | None = None
        self._paused_reason: str | None = "not started"
        self._last_log = (None, -float("inf"))
        for topic in config.cameras.values():
            msg_type = CompressedImage if topic.endswith("/compressed") else Image
            transport.subscribe(topic, msg_type, self._store(topic), SENSOR_QOS)
        transport.subscribe(config.state_topic, JointState, self._store(config.state_topic), SENSOR_QOS)
        transport.subscribe(config.instruction_topic, String, self._on_instruction, DEFAULT_QOS)
        command_cls = Float64MultiArray if config.command_type == "float64_multi_array" else JointTrajectory
        if command_sink is None and config.command_type == "follow_joint_trajectory":
            raise ValueError(
                "command_type 'follow_joint_trajectory' sends action goals: run the bridge with the rclpy "
                "transport (fastvla ros2 --transport rclpy), or use 'joint_trajectory' to publish on a topic"
            )
        self._command_pub = command_sink or transport.publisher(
            config.command_topic, command_cls, DEFAULT_QOS
        )

    # --- callbacks (run on the transport's threads: keep them cheap) --------------------------------

    def _store(self, topic: str):
        def callback(msg: Message) -> None:
            self._latest[topic] = (self.clock(), time.time_ns(), msg)
            self.stats.received[topic] += 1

        return callback

    def _on_instruction(self, msg: Message) -> None:
        assert isinstance(msg, String)
        self._pending_instruction = msg.data

    def set_instruction(self, instruction: str, reset: bool = True) -> None:
        """Switch to ``instruction`` at the next tick (thread-safe); ``reset`` also resets the policy then."""
        self._pending_instruction = instruction
        self._reset_requested = self._reset_requested or reset

    # --- one control step ---------------------------------------------------------------------------

    def _gather(self, now: float) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
        """Newest observation, or the reason there is none fit to act on."""
        cfg = self.config
        topics = [*cfg.cameras.values(), cfg.state_topic]
        latest = {topic: self._latest.get(topic) for topic in topics}
        for topic, entry in latest.items():
            if entry is None:
                return None, f"no message received yet on {topic}", {}
            age = now - entry[0]
            if age > cfg.max_staleness:
                return None, f"stale {topic}: last message {age:.2f} s ago (max {cfg.max_staleness} s)", {}
        stamps = {t: e[2].header.stamp.to_ns() for t, e in latest.items()}
        if cfg.check_stamps and all(stamps.values()):
            spread = (max(stamps.values()) - min(stamps.values())) * 1e-9
            if spread > cfg.max_staleness:
                reason = f"unsynchronised: header stamps span {spread:.2f} s (max {cfg.max_staleness} s)"
                return None, reason, {}
        joint_state = latest[cfg.state_topic][2]
        assert isinstance(joint_state, JointState)
        position = np.asarray(joint_state.position, dtype=np.float64)
        if cfg.joint_names:
            missing = [n for n in cfg.joint_names if n not in joint_state.name]
            if missing:
                return None, f"joints {missing} missing from {cfg.state_topic} (has {joint_state.name})", {}
            position = position[[joint_state.name.index(n) for n in cfg.joint_names]]
        pixels = {}
        for cam, topic in cfg.cameras.items():
            try:
                pixels[cam] = to_rgb(latest[topic][2])
            except ValueError as err:
                return None, f"bad image on {topic}: {err}", {}
        meta = {
            "oldest_recv": min(latest[t][0] for t in topics),
            "stamps_ns": {t: stamps[t] for t in topics},
            "recv_ns": {t: latest[t][1] for t in topics},
            "joint_names": list(joint_state.name),
        }
        return {"pixels": pixels, "agent_pos": position.astype(np.float32)}, None, meta

    def _pause(self, reason: str, now: float) -> None:
        self.stats.paused += 1
        self.stats.pause_reasons[reason.split(":")[0]] += 1
        kind = reason.split(":")[0]  # "stale /topic": the age after the colon changes every tick
        last_kind, last_time = self._last_log
        if kind != last_kind or now - last_time >= _REPEAT_LOG_S:
            logger.warning("commands paused: %s", reason)
            self._last_log = (kind, now)
        self._paused_reason = reason

    def _command(self, obs: dict[str, Any], meta: dict[str, Any]) -> Message:
        cfg = self.config
        if cfg.command_type == "float64_multi_array":
            action = np.asarray(self.policy.select_action(obs, task=self.instruction), dtype=np.float64)
            self.last_action = action.reshape(-1)
            return Float64MultiArray.from_array(action.reshape(-1), labels=("action",))
        chunk = np.asarray(self.policy.predict_action_chunk(obs, task=self.instruction), dtype=np.float64)
        chunk = chunk.reshape(-1, chunk.shape[-1])  # (T, A); a leading batch of 1 is folded away
        self.last_action = chunk[0]
        names = list(cfg.joint_names) or meta["joint_names"][: chunk.shape[1]]
        names += [f"joint_{i}" for i in range(len(names), chunk.shape[1])]
        dt = cfg.chunk_dt or 1.0 / cfg.rate
        points = [
            JointTrajectoryPoint(positions=row, time_from_start=Duration.from_sec(dt * (i + 1)))
            for i, row in enumerate(chunk)
        ]
        # A zero stamp tells joint_trajectory_controller to start the trajectory on receipt.
        return JointTrajectory(header=Header(), joint_names=names, points=points)

    def tick(self, now: float | None = None) -> bool:
        """Run one control step; returns whether a command was published."""
        now = self.clock() if now is None else now
        tick_ns = time.time_ns()
        self.stats.ticks += 1
        if self._pending_instruction is not None:
            new, self._pending_instruction = self._pending_instruction, None
            reset, self._reset_requested = self._reset_requested, False
            if new != self.instruction or reset:
                logger.info("instruction changed: %r -> %r", self.instruction, new)
                self.instruction = new
                self.policy.reset()
        if not self.active:
            self._pause("idle: waiting for a goal", now)
            return False
        if self.command_budget is not None and self.command_budget <= 0:
            self._pause("idle: the goal's max steps were published", now)
            return False
        obs, reason, meta = self._gather(now)
        if obs is None:
            self._pause(reason, now)
            return False
        if self._paused_reason is not None:
            if self._paused_reason != "not started":
                logger.info("commands resumed (was: %s)", self._paused_reason)
                self.policy.reset()  # act on a fresh chunk, not on the queue from before the pause
            self._paused_reason = None
        try:
            command = self._command(obs, meta)
        except Exception as err:  # a failing policy must not publish, nor kill the node silently
            self.stats.policy_errors += 1
            logger.exception("policy failed; commands paused")
            self._pause(f"policy error: {type(err).__name__}: {err}", now)
            return False
        age = self.clock() - meta.pop("oldest_recv")
        if age > self.config.max_staleness:  # inference outlasted the inputs: don't act on old data
            self._pause(
                f"slow policy: inputs were {age:.2f} s old when the command was ready "
                f"(max {self.config.max_staleness} s; raise --max-staleness or use a faster policy)",
                now,
            )
            return False
        publish_ns = time.time_ns()  # before write(): a reliable write may deliver before it returns
        self._command_pub.publish(command)
        self.stats.published += 1
        if self.command_budget is not None:
            self.command_budget -= 1
        self.stats.records.append({"tick_ns": tick_ns, "publish_ns": publish_ns, **meta})
        return True

    def spin(
        self,
        duration: float | None = None,
        max_ticks: int | None = None,
        stop: threading.Event | None = None,
    ) -> BridgeStats:
        """Tick at ``config.rate`` until ``duration`` seconds, ``max_ticks`` ticks or ``stop`` is set.

        Ticks follow an absolute schedule; when a tick overruns, missed slots are skipped (never bursts).
        """
        period = 1.0 / self.config.rate
        start = self.clock()
        next_tick, n = start, 0
        stop = stop or threading.Event()
        while not stop.is_set():
            if max_ticks is not None and n >= max_ticks:
                break
            if duration is not None and self.clock() - start >= duration:
                break
            delay = next_tick - self.clock()
            if delay > 0 and stop.wait(delay):
                break
            self.tick()
            n += 1
            next_tick += period
            behind = self.clock() - next_tick
            if behind > period:
                skipped = int(behind // period)
                logger.warning("control loop overran: skipping %d tick(s) at %.1f Hz", skipped, 1 / period)
                next_tick += skipped * period
        return self.stats
