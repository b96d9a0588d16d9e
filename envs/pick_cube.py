"""``fastvla/PickCube-v0``: grasp the cube named by its colour and lift it."""

from __future__ import annotations

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z

TEMPLATES = (
    "pick up the {color} cube",
    "lift the {color} cube",
    "grab the {color} block and lift it",
    "pick the {color} cube up",
)
LIFT_HEIGHT = 0.05  # success: cube bottom this far above the table
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
    ``reward_reach = 1 - tanh(5 d)`` (TCP to cube), ``reward_grasp = 1`` while both fingers touch it,
    ``reward_lift = clip(height / 5 cm, 0, 1)``, ``reward_success = 1``; terms in ``info`` with
    ``reach_distance`` and ``lift_height``.

    ## Starting State
    As in ``ReachCube``.

    ## Episode End
    Terminates when the named cube's bottom is 5 cm above the table while grasped; truncated after
    80 steps.

    ## Arguments
    See :class:`fastvla.envs.base.TabletopEnv`; ``num_distractors`` defaults to 2 (0-3).

    ## Version History
    * v0: initial version.
    """

    n_task_cubes = 1
    default_distractors = 2

    def _setup_episode(self) -> str:
        self.place_cubes(self.sample_cube_positions(self.n_cubes))
        template = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))]
        return template.format(color=self.colors[0])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        cube = p.cube_pos(0)
        dist = float(np.linalg.norm(p.tcp_pos - cube))
        height = float(cube[2] - CUBE_HALF - TABLE_Z)
        grasped = p.finger_contacts(0) == 2
        success = grasped and height > LIFT_HEIGHT
        terms = {
            "reach_distance": dist,
            "lift_height": height,
            "reward_reach": 1.0 - float(np.tanh(5.0 * dist)),
            "reward_grasp": float(grasped),
            "reward_lift": float(np.clip(height / LIFT_HEIGHT, 0.0, 1.0)) * float(grasped),
            "reward_success": float(success),
        }
        reward = (
            terms["reward_reach"] + terms["reward_grasp"] + terms["reward_lift"] + terms["reward_success"]
        )
        return reward, success, terms

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        wp = self._grasp_waypoint(0)
        if wp is not None:
            return wp
        tcp = self.physics.tcp_pos
        return np.array([tcp[0], tcp[1], CARRY_Z + 0.05]), self.physics.cube_yaw(0), False
