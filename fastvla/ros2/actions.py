"""ROS 2 actions of the rclpy bridge: run an instruction as a goal; send chunks to a trajectory controller.

- :class:`InstructionActionServer` serves ``fastvla_msgs/action/RunInstruction`` on
  ``/<node>/run_instruction``: a goal switches the bridge to its instruction (resetting the policy) and
  lets it publish commands until ``max_steps`` commands went out (SUCCEEDED), ``time_limit`` seconds
  passed since its first command (TIMED_OUT), the client cancelled (CANCELED), a newer goal replaced it
  or no command went out within ``start_timeout`` seconds (ABORTED). The time limit is the robot's
  moving time: a policy's warm-up or a late first camera frame does not use it up. Feedback each control
  period: steps, seconds since the goal started, the newest action. With ``idle_between_goals`` the bridge
  publishes nothing while no goal runs.
- :class:`FollowJointTrajectorySink` sends each predicted chunk as a
  ``control_msgs/action/FollowJointTrajectory`` goal (what ``joint_trajectory_controller`` serves on
  ``/<controller>/follow_joint_trajectory``) and counts the outcomes; rejected goals and non-zero
  ``error_code`` results are logged and kept in the bridge's stats.

The interface types come from ROS packages: ``fastvla_msgs`` ships in ``fastvla/ros2/interfaces`` (build it
in your workspace, or ``scripts/ros_venv.sh`` builds it into a PyPI ROS venv) and ``control_msgs`` from
your ROS install (``ros-$ROS_DISTRO-control-msgs``; the venv script builds the FollowJointTrajectory
subset from the same definition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from fastvla.ros2.bridge import PolicyBridge
from fastvla.ros2.msgs import JointTrajectory

logger = logging.getLogger("fastvla.ros2")

SUCCEEDED, TIMED_OUT, CANCELED, ABORTED = 0, 1, 2, 3  # fastvla_msgs/action/RunInstruction result outcomes
_STATUS_NAMES = {2: "executing", 4: "succeeded", 5: "canceled", 6: "aborted"}  # action_msgs/GoalStatus


class InstructionActionServer:
    """``fastvla_msgs/action/RunInstruction`` server driving ``bridge`` (see module docstring).

    Args:
        node: the bridge's rclpy node (spun by a multi-threaded executor).
        bridge: the running :class:`~fastvla.ros2.bridge.PolicyBridge`.
        name: action name (``~`` expands to the node's name).
        idle_between_goals: publish nothing while no goal runs (the bridge starts idle).
        start_timeout: seconds a goal may wait for its first command (observations, the policy's first
            chunk) before it ends as ABORTED.
    """

    def __init__(
        self,
        node: Any,
        bridge: PolicyBridge,
        name: str = "~/run_instruction",
        idle_between_goals: bool = True,
        start_timeout: float = 10.0,
    ):
        if start_timeout <= 0:
            raise ValueError(f"start_timeout={start_timeout} must be > 0 seconds")
        from fastvla_msgs.action import RunInstruction
        from rclpy.action import ActionServer, CancelResponse, GoalResponse
        from rclpy.callback_groups import ReentrantCallbackGroup

        self.bridge, self.idle_between_goals, self.start_timeout = bridge, idle_between_goals, start_timeout
        self._type = RunInstruction
        self._current: object | None = None
        self._lock = threading.Lock()
        if idle_between_goals:
            bridge.active = False
        self.server = ActionServer(
            node,
            RunInstruction,
            name,
            execute_callback=self._execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )

    def _finish(self, goal_handle: Any, outcome: int, message: str, steps: int, elapsed: float) -> Any:
        result = self._type.Result(outcome=outcome, message=message, steps=steps, elapsed=elapsed)
        if outcome == SUCCEEDED:
            goal_handle.succeed()
        elif outcome == CANCELED:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        logger.info(
            "goal %r ended: %s (%d steps, %.2f s)", goal_handle.request.instruction, message, steps, elapsed
        )
        return result

    def _feedback(self, goal_handle: Any, steps: int, elapsed: float) -> None:
        last = self.bridge.last_action
        feedback = self._type.Feedback(
            steps=steps, elapsed=elapsed, last_action=[] if last is None else [float(v) for v in last]
        )
        goal_handle.publish_feedback(feedback)

    def _execute(self, goal_handle: Any) -> Any:
        request, token = goal_handle.request, object()
        with self._lock:
            self._current = token
            start_steps = self.bridge.stats.published
            self.bridge.set_instruction(request.instruction, reset=True)
            self.bridge.command_budget = request.max_steps or None
            self.bridge.active = True
        start, period = time.monotonic(), 1.0 / self.bridge.config.rate
        first_command: float | None = None  # when this goal's first command was seen
        logger.info(
            "goal: %r (time limit %.1f s, max steps %d)",
            request.instruction,
            request.time_limit,
            request.max_steps,
        )
        while True:
            steps = self.bridge.stats.published - start_steps
            now = time.monotonic()
            elapsed = now - start
            if steps and first_command is None:
                first_command = now
            if self._current is not token:
                return self._finish(goal_handle, ABORTED, "replaced by a newer goal", steps, elapsed)
            if goal_handle.is_cancel_requested:
                outcome, message = CANCELED, "cancelled"
            elif request.max_steps and steps >= request.max_steps:
                outcome, message = SUCCEEDED, f"published {steps} commands"
            elif first_command is None and elapsed >= self.start_timeout:
                outcome, message = (
                    ABORTED,
                    (
                        f"no command published within {self.start_timeout:.1f} s of the goal: check that the "
                        "camera and state topics publish and that the policy answers"
                    ),
                )
            elif (
                first_command is not None
                and request.time_limit > 0
                and now - first_command >= request.time_limit
            ):
                outcome, message = TIMED_OUT, f"time limit {request.time_limit:.2f} s reached"
            else:
                self._feedback(goal_handle, steps, elapsed)
                time.sleep(period)
                continue
            # A fast control loop can finish a goal between two polls: the last feedback states the end.
            self._feedback(goal_handle, steps, elapsed)
            with self._lock:
                if self._current is token:
                    self._current = None
                    self.bridge.command_budget = None
                    if self.idle_between_goals:
                        self.bridge.active = False
            return self._finish(goal_handle, outcome, message, steps, elapsed)


class FollowJointTrajectorySink:
    """Sends each ``JointTrajectory`` command as a FollowJointTrajectory goal (see module docstring).

    Args:
        node: an rclpy node spun by a multi-threaded executor.
        action_name: the controller's action, e.g. ``/arm_controller/follow_joint_trajectory``.
        stats: dict the outcome counters and recent errors are kept in (``BridgeStats.extra``).
    """

    def __init__(self, node: Any, action_name: str, stats: dict | None = None) -> None:
        from control_msgs.action import FollowJointTrajectory
        from rclpy.action import ActionClient
        from rclpy.callback_groups import ReentrantCallbackGroup
        from trajectory_msgs.msg import JointTrajectory as RosJointTrajectory

        self._type, self._ros_trajectory, self.action_name = (
            FollowJointTrajectory,
            RosJointTrajectory,
            action_name,
        )
        self.client = ActionClient(
            node, FollowJointTrajectory, action_name, callback_group=ReentrantCallbackGroup()
        )
        self.counts: Counter = Counter()
        self.errors: deque = deque(maxlen=20)
        self._last_warning = -float("inf")
        if stats is not None:
            stats["follow_joint_trajectory"] = self.summary

    def publish(self, msg: JointTrajectory) -> None:
        """Send ``msg`` as a goal (non-blocking); skipped, with a warning, while no server is up."""
        from rclpy.serialization import deserialize_message

        if not self.client.server_is_ready():
            self.counts["server_unavailable"] += 1
            if time.monotonic() - self._last_warning > 5.0:
                logger.warning("no FollowJointTrajectory server on %s: chunk dropped", self.action_name)
                self._last_warning = time.monotonic()
            return
        goal = self._type.Goal()
        goal.trajectory = deserialize_message(msg.serialize(), self._ros_trajectory)
        self.counts["sent"] += 1
        self.client.send_goal_async(goal).add_done_callback(self._on_goal_response)

    def _error(self, kind: str, **details: Any) -> None:
        self.errors.append({"kind": kind, **details})
        logger.warning("FollowJointTrajectory on %s: %s %s", self.action_name, kind, details)

    def _on_goal_response(self, future: Any) -> None:
        handle = future.result()
        if not handle.accepted:
            self.counts["rejected"] += 1
            self._error("goal rejected")
            return
        self.counts["accepted"] += 1
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, future: Any) -> None:
        response = future.result()
        status, result = response.status, response.result
        name = _STATUS_NAMES.get(status, f"status {status}")
        if name == "succeeded" and result.error_code == 0:
            self.counts["succeeded"] += 1
        elif name == "canceled":  # the controller preempts a running goal when the next chunk arrives
            self.counts["preempted"] += 1
        else:
            self.counts["failed"] += 1
            self._error(name, error_code=result.error_code, error_string=result.error_string)

    def summary(self) -> dict[str, Any]:
        """Counters and recent errors, JSON-ready."""
        return {"counts": dict(self.counts), "errors": list(self.errors)}
