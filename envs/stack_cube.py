"""``fastvla/StackCube-v0``: stack the cube named first on the cube named second."""

from __future__ import annotations

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z
from fastvla.envs.pick_cube import CARRY_Z, PickAndPlaceExpert

TEMPLATES = (
    "stack the {top} cube on the {base} cube",
    "put the {top} cube on top of the {base} cube",
    "place the {top} block on the {base} block",
)
XY_TOLERANCE = 0.02  # top cube centre within this of the base cube's, horizontally
RELEASE_GAP = 0.008  # top cube's bottom above the base cube's top when the expert lets go


class StackCubeEnv(PickAndPlaceExpert, TabletopEnv):
    """Stack the cube named first on the cube named second.

    ## Description
    "stack the red cube on the blue cube": two named cubes plus ``num_distractors`` others. The arm must
    grasp the first, put it on the second and let go, leaving a stable two-cube tower.

    ## Action Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Observation Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Rewards
    ``reward_reach`` (TCP to the top cube), ``reward_grasp``, ``reward_align = 1 - tanh(5 d)`` (top cube
    to the spot above the base cube), ``reward_success``; terms in ``info`` with ``stack_distance``.

    ## Starting State
    As in ``ReachCube``.

    ## Episode End
    Terminates when the top cube rests on the base cube (centres within 2 cm horizontally, one cube
    height apart vertically), no finger touches it, and the base cube is still on the table; truncated
    after 150 steps.

    ## Arguments
    See :class:`fastvla.envs.base.TabletopEnv`; ``num_distractors`` defaults to 1 (0-2).

    ## Version History
    * v0: initial version.
    """

    n_task_cubes = 2
    quiet_phases = (2, 6)
    precise_phases = (5,)
    max_distractors = 2
    default_distractors = 1

    def _setup_episode(self) -> str:
        self.place_cubes(self.sample_cube_positions(self.n_cubes))
        template = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))]
        return template.format(top=self.colors[0], base=self.colors[1])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        top, base = p.cube_pos(0), p.cube_pos(1)
        above = base + np.array([0.0, 0.0, 2 * CUBE_HALF])
        stack_dist = float(np.linalg.norm(top - above))
        xy = float(np.linalg.norm(top[:2] - base[:2]))
        touching = p.finger_contacts(0)
        success = (
            xy < XY_TOLERANCE
            and abs(top[2] - above[2]) < 0.008
            and base[2] < TABLE_Z + CUBE_HALF + 0.005
            and touching == 0
        )
        terms = {
            "reach_distance": float(np.linalg.norm(p.tcp_pos - top)),
            "stack_distance": stack_dist,
            "reward_reach": 1.0 - float(np.tanh(5.0 * np.linalg.norm(p.tcp_pos - top))),
            "reward_grasp": float(touching == 2),
            "reward_align": 1.0 - float(np.tanh(5.0 * stack_dist)),
            "reward_success": float(success),
        }
        return sum(v for k, v in terms.items() if k.startswith("reward_")), success, terms

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        wp = self._grasp_waypoint(0)
        if wp is not None:
            return wp
        p = self.physics
        tcp, top, base = p.tcp_pos, p.cube_pos(0), p.cube_pos(1)
        offset = top - tcp  # where the cube sits in the hand
        # Turn the held cube's faces parallel to the base cube's while carrying it.
        cur_yaw = float(np.arctan2(p.tcp_mat[1, 0], p.tcp_mat[0, 0]))
        turn = (p.cube_yaw(1) - p.cube_yaw(0) + np.pi / 4) % (np.pi / 2) - np.pi / 4
        yaw = cur_yaw + turn
        goal_xy = base[:2] - offset[:2]
        if self._phase == 4:  # carry above the base cube
            target = np.array([*goal_xy, CARRY_Z])
            self._advance(np.linalg.norm(tcp - target) < 0.01 and abs(turn) < 0.05)
            if self._phase == 4:
                return target, yaw, False
        if self._phase == 5:  # lower until just above it
            z = base[2] + 2 * CUBE_HALF + RELEASE_GAP - offset[2]
            target = np.array([*goal_xy, z])
            self._advance(abs(tcp[2] - z) < 0.004 and np.linalg.norm(tcp[:2] - goal_xy) < 0.004)
            if self._phase == 5:
                return target, yaw, False
        if self._phase == 6:  # open
            self._advance(True, min_steps=3)
            if self._phase == 6:
                return tcp, cur_yaw, True
        return np.array([tcp[0], tcp[1], CARRY_Z]), cur_yaw, True
