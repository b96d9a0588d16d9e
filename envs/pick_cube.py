"""``fastvla/PickCube-v0``: grasp the cube named by its colour and lift it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z

TEMPLATES = (
    "pick up the {color} cube",
    "lift the {color} cube",
    "grab the {color} block and lift it",
    "pick the {color} cube up",
)
LIFT_HEIGHT = 0.05  # default success: cube bottom this far above the table
APPROACH = 0.08  # pre-grasp height above the cube centre
GRASP_DEPTH = 0.005  # TCP above the cube centre when closing
CARRY_Z = 0.15


class PickAndPlaceExpert:
    """Waypoint phases shared by the grasping tasks (mixed into the env classes).

    Phases: 0 above the cube, 1 down to it, 2 close, 3 lift to ``CARRY_Z``; tasks add their own after.
    """

    def _grasp_waypoint(self, cube: int) -> tuple[np.ndarray, float, bool] | None:
        """Waypoint for phases 0-3 of grasping cube ``cube`` (None once phase 3 is done)."""
        p = self.physics
        cube_pos, yaw = p.cube_pos(cube), p.cube_yaw(cube)
        tcp = p.tcp_pos
        xy_err = float(np.linalg.norm(tcp[:2] - cube_pos[:2]))
        if self._phase == 0:
            target = cube_pos + np.array([0.0, 0.0, APPROACH])
            self._advance(np.linalg.norm(tcp - target) < 0.015 and self._yaw_ok(yaw))
        if self._phase == 1:
            target = cube_pos + np.array([0.0, 0.0, GRASP_DEPTH])
            self._advance(abs(tcp[2] - target[2]) < 0.008 and xy_err < 0.01)
            if xy_err > 0.03:  # knocked away: start over
                self._phase, self._phase_steps = 0, 0
                return self._grasp_waypoint(cube)
            return target, yaw, True
        if self._phase == 2:
            target = cube_pos + np.array([0.0, 0.0, GRASP_DEPTH])
            self._advance(True, min_steps=3)
            if self._phase == 2:
                return target, yaw, False
        if self._phase == 3:
            target = np.array([tcp[0], tcp[1], CARRY_Z])
            if xy_err > 0.015 and self._phase_steps > 0:
                # Held by an edge: such grasps slip when carried. Put it down and grasp again.
                self._phase, self._phase_steps = 0, 0
                return cube_pos + np.array([0.0, 0.0, APPROACH]), yaw, True
            if (
                p.finger_contacts(cube) < 2
                and cube_pos[2] < TABLE_Z + CUBE_HALF + 0.01
                and self._phase_steps > 2
            ):
                self._phase, self._phase_steps = 0, 0  # dropped it: retry
                return self._grasp_waypoint(cube)
            self._advance(tcp[2] > CARRY_Z - 0.02)
            if self._phase == 3:
                return target, yaw, False
            return None
        if self._phase == 0:
            return cube_pos + np.array([0.0, 0.0, APPROACH]), yaw, True
        return None

    def _release_waypoint(
        self,
        goal_xy: np.ndarray,
        release_z: float,
        yaw: float,
        open_yaw: float,
        carried: Callable[[np.ndarray, np.ndarray], bool],
        lowered: Callable[[np.ndarray], bool],
    ) -> tuple[np.ndarray, float, bool]:
        """Waypoint for phases 4-6 after a grasp: 4 carry at ``CARRY_Z`` above ``goal_xy``, 5 lower the TCP to
        ``release_z``, 6 open; then hold open at ``CARRY_Z``.

        Args:
            goal_xy: TCP position (x, y) that puts the held cube where it belongs.
            release_z: TCP height at which the gripper opens.
            yaw: gripper yaw while carrying and lowering; ``open_yaw`` once it opens.
            open_yaw: gripper yaw from the opening on.
            carried: ``carried(tcp, target)``: phase 4 is done.
            lowered: ``lowered(tcp)``: phase 5 is done.
        """
        tcp = self.physics.tcp_pos
        if self._phase == 4:  # carry above the goal
            target = np.array([*goal_xy, CARRY_Z])
            self._advance(carried(tcp, target))
            if self._phase == 4:
                return target, yaw, False
        if self._phase == 5:  # lower until the cube is just above where it goes
            target = np.array([*goal_xy, release_z])
            self._advance(lowered(tcp))
            if self._phase == 5:
                return target, yaw, False
        if self._phase == 6:  # open
            self._advance(True, min_steps=3)
            if self._phase == 6:
                return tcp, open_yaw, True
        return np.array([tcp[0], tcp[1], CARRY_Z]), open_yaw, True

    # Phases in which the gripper closes or opens get no expert noise; precise phases a quarter of it.
    quiet_phases: tuple[int, ...] = (2,)
    precise_phases: tuple[int, ...] = ()

    def _expert_noise_scale(self) -> float:
        if self._phase in self.quiet_phases:
            return 0.0
        return 0.25 if self._phase in self.precise_phases else 1.0

    def _yaw_ok(self, yaw: float) -> bool:
        mat = self.physics.tcp_mat
        cur = float(np.arctan2(mat[1, 0], mat[0, 0]))
        diff = (cur - yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return abs(diff) < 0.08


class PickCubeEnv(PickAndPlaceExpert, TabletopEnv):
    """Pick up the cube whose colour the instruction names.

    ## Description
    Same scene as ``ReachCube`` ("pick up the green cube"); the arm must grasp the named cube and lift it.

    ## Action Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Observation Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Rewards
    The sum of four weighted terms, each in ``info`` (with ``reach_distance`` and ``lift_height``):

    * ``reward_reach = reward_reach_weight * (1 - tanh(k d))``, TCP to cube, ``k = distance_reward_scale``;
    * ``reward_grasp = reward_grasp_weight`` while both fingers touch the cube;
    * ``reward_lift = reward_lift_weight * clip(height / lift_height, 0, 1)`` while grasped;
    * ``reward_success = reward_success_weight`` on success.

    ## Starting State
    As in ``ReachCube``.

    ## Episode End
    Terminates when the named cube's bottom is ``lift_height`` (5 cm) above the table while grasped;
    truncated after 80 steps.

    ## Arguments
    | Parameter | Type | Default | Description |
    |---|---|---|---|
    | `lift_height` | **float** | `0.05` | Cube bottom's height (m) above the table that counts as lifted |
    | `reward_reach_weight` | **float** | `1.0` | Weight of the _reward_reach_ term (see Rewards) |
    | `reward_grasp_weight` | **float** | `1.0` | Weight of the _reward_grasp_ term (see Rewards) |
    | `reward_lift_weight` | **float** | `1.0` | Weight of the _reward_lift_ term (see Rewards) |
    | `reward_success_weight` | **float** | `1.0` | Weight of the _reward_success_ term (see Rewards) |
    | `distance_reward_scale` | **float** | `5.0` | `k` (1/m) in the shaped term `1 - tanh(k d)` |
    | `num_distractors` | **int** | `2` | Cubes of other colours besides the target (0-3) |

    Scene, rendering, control and spawn arguments: see :class:`fastvla.envs.base.TabletopEnv`. The
    scripted expert lifts the cube's bottom to about 17 cm, so it also succeeds for a ``lift_height`` up
    to 0.15 m.

    ## Version History
    * v0: initial version. Lift height and reward weights became constructor arguments later, with
      defaults that keep v0 episodes identical.
    """

    n_task_cubes = 1
    default_distractors = 2
    # The task's own arguments (set by `_task_arguments`).
    lift_height: float
    reward_grasp_weight: float
    reward_lift_weight: float

    def __init__(
        self,
        *,
        lift_height: float = LIFT_HEIGHT,
        reward_grasp_weight: float = 1.0,
        reward_lift_weight: float = 1.0,
        **kwargs: Any,
    ):
        self._task_arguments(
            positive={"lift_height": lift_height},
            weights={"reward_grasp_weight": reward_grasp_weight, "reward_lift_weight": reward_lift_weight},
        )
        super().__init__(**kwargs)

    def _setup_episode(self) -> str:
        self.place_cubes(self.sample_cube_positions(self.n_cubes))
        return self._instruction(TEMPLATES, color=self.colors[0])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        cube = p.cube_pos(0)
        dist = float(np.linalg.norm(p.tcp_pos - cube))
        height = float(cube[2] - CUBE_HALF - TABLE_Z)
        grasped = p.finger_contacts(0) == 2
        success = grasped and height > self.lift_height
        lift = float(np.clip(height / self.lift_height, 0.0, 1.0)) * float(grasped)
        return self._score(
            success,
            dist,
            {"lift_height": height},
            {"reward_lift": self.reward_lift_weight * lift},
            grasped=grasped,
        )

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        wp = self._grasp_waypoint(0)
        if wp is not None:
            return wp
        tcp = self.physics.tcp_pos
        return np.array([tcp[0], tcp[1], CARRY_Z + 0.05]), self.physics.cube_yaw(0), False
