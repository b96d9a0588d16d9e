"""RunInstruction goal logic without ROS: when a goal times out, succeeds or gives up waiting.

The server's ``_execute`` loop only reads the bridge's counters and the goal handle, so a stub bridge whose
control loop is a thread (publishing after a chosen delay, like a policy warming up) and a stub goal handle
drive it here; ``tests/ros2/test_rclpy_interop.py`` runs the same server under real rclpy.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fastvla.ros2.actions import ABORTED, SUCCEEDED, TIMED_OUT, InstructionActionServer


class StubBridge:
    """Publishes a command every ``period`` s from ``first_after`` s after the goal's reset, while active."""

    def __init__(self, first_after: float | None, period: float = 0.02):
        self.config = SimpleNamespace(rate=1.0 / period)
        self.stats = SimpleNamespace(published=0)
        self.active, self.command_budget, self.last_action = False, None, None
        self.first_after, self.period, self.instructions = first_after, period, []
        self._stop = threading.Event()

    def set_instruction(self, instruction: str, reset: bool = True) -> None:
        self.instructions.append(instruction)
        if self.first_after is not None:
            threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        time.sleep(self.first_after)
        while not self._stop.is_set():
            if self.active and (self.command_budget is None or self.command_budget > 0):
                self.stats.published += 1
                self.last_action = [0.0, 1.0]
                if self.command_budget is not None:
                    self.command_budget -= 1
            time.sleep(self.period)


class StubGoal:
    def __init__(self, instruction: str, time_limit: float = 0.0, max_steps: int = 0):
        self.request = SimpleNamespace(instruction=instruction, time_limit=time_limit, max_steps=max_steps)
        self.is_cancel_requested = False
        self.feedback, self.ended = [], None

    def publish_feedback(self, feedback) -> None:
        self.feedback.append(feedback)

    def succeed(self) -> None:
        self.ended = "succeeded"

    def abort(self) -> None:
        self.ended = "aborted"

    def canceled(self) -> None:
        self.ended = "canceled"


def server(bridge: StubBridge, start_timeout: float = 10.0) -> InstructionActionServer:
    """The server without its rclpy ActionServer (``__init__`` builds one; ``_execute`` needs none)."""
    srv = InstructionActionServer.__new__(InstructionActionServer)
    srv.bridge, srv.idle_between_goals, srv.start_timeout = bridge, True, start_timeout
    srv._type = SimpleNamespace(Result=SimpleNamespace, Feedback=SimpleNamespace)
    srv._current, srv._lock = None, threading.Lock()
    return srv


def test_time_limit_counts_from_the_first_command_not_the_policy_warm_up() -> None:
    bridge = StubBridge(first_after=0.5)  # a slow first chunk, longer than the time limit itself
    goal = StubGoal("push the blue cube", time_limit=0.3)
    result = server(bridge)._execute(goal)
    bridge._stop.set()
    assert (result.outcome, goal.ended) == (TIMED_OUT, "aborted"), result.message
    assert result.steps >= 1, "a timed-out goal moved the robot for its time limit"
    assert result.elapsed >= 0.5 + 0.3 - 0.05  # warm-up + the time limit, from the goal's start
    assert not bridge.active  # idle again between goals


def test_goal_that_never_gets_a_command_aborts_with_what_to_check() -> None:
    bridge = StubBridge(first_after=None)  # no camera/state messages: nothing is ever published
    goal = StubGoal("open the drawer", time_limit=0.1)
    result = server(bridge, start_timeout=0.3)._execute(goal)
    assert (result.outcome, result.steps) == (ABORTED, 0)
    assert (
        "no command published within 0.3 s" in result.message and "camera and state topics" in result.message
    )
    assert 0.3 <= result.elapsed < 2.0


def test_max_steps_succeeds_and_the_last_feedback_states_the_end() -> None:
    bridge = StubBridge(first_after=0.05)
    goal = StubGoal("pick up the red cube", max_steps=5)
    result = server(bridge)._execute(goal)
    bridge._stop.set()
    assert (result.outcome, result.steps, goal.ended) == (SUCCEEDED, 5, "succeeded")
    assert goal.feedback[-1].steps == 5 and bridge.instructions == ["pick up the red cube"]


def test_start_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="start_timeout"):
        InstructionActionServer(node=None, bridge=StubBridge(None), start_timeout=0)
