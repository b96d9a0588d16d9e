"""``fastvla/StackCube-v0``: stack the cube named first on the cube named second."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z
from fastvla.envs.pick_cube import PickAndPlaceExpert

TEMPLATES = (
    "stack the {top} cube on the {base} cube",
    "put the {top} cube on top of the {base} cube",
    "place the {top} block on the {base} block",
)
# Defaults of the task's arguments.
XY_TOLERANCE = 0.02  # top cube centre within this of the base cube's, horizontally, metres
Z_TOLERANCE = 0.008  # top cube centre within this of one cube height above the base cube's, metres
REST_TOLERANCE = 0.005  # base cube centre at most this above its resting height on the table, metres

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
    The sum of four weighted terms, each in ``info`` (with ``reach_distance`` and ``stack_distance``):

    * ``reward_reach = reward_reach_weight * (1 - tanh(k d))``, TCP to the top cube,
      ``k = distance_reward_scale``;
    * ``reward_grasp = reward_grasp_weight`` while both fingers touch the top cube;
    * ``reward_align = reward_align_weight * (1 - tanh(k d))``, top cube to the spot above the base cube;
    * ``reward_success = reward_success_weight`` on success.

    ## Starting State
    As in ``ReachCube``.

    ## Episode End
    Terminates when the top cube rests on the base cube (centres within ``xy_tolerance`` (2 cm)
    horizontally, one cube height apart vertically within ``z_tolerance`` (8 mm)), no finger touches it,
    and the base cube is still on the table (within ``rest_tolerance``); truncated after 150 steps.

    ## Arguments
    | Parameter | Type | Default | Description |
    |---|---|---|---|
    | `xy_tolerance` | **float** | `0.02` | Horizontal distance (m) of the centres that counts as stacked |
    | `z_tolerance` | **float** | `0.008` | Vertical error (m) from one cube height above the base |
    | `rest_tolerance` | **float** | `0.005` | Height (m) above its resting height the base still rests |
    | `reward_reach_weight` | **float** | `1.0` | Weight of the _reward_reach_ term (see Rewards) |
    | `reward_grasp_weight` | **float** | `1.0` | Weight of the _reward_grasp_ term (see Rewards) |
    | `reward_align_weight` | **float** | `1.0` | Weight of the _reward_align_ term (see Rewards) |
    | `reward_success_weight` | **float** | `1.0` | Weight of the _reward_success_ term (see Rewards) |
    | `distance_reward_scale` | **float** | `5.0` | `k` (1/m) in the shaped terms `1 - tanh(k d)` |
    | `num_distractors` | **int** | `1` | Cubes of other colours besides the two named (0-2) |

    Scene, rendering, control and spawn arguments: see :class:`fastvla.envs.base.TabletopEnv`.

    ## Version History
    * v0: initial version. Stacking tolerances and reward weights became constructor arguments later,
      with defaults that keep v0 episodes identical.
    """

    n_task_cubes = 2
    quiet_phases = (2, 6)
    precise_phases = (5,)
    max_distractors = 2
    default_distractors = 1
    # The task's own arguments (set by `_task_arguments`).
    xy_tolerance: float
    z_tolerance: float
    rest_tolerance: float
    reward_grasp_weight: float
    reward_align_weight: float

    def __init__(
        self,
        *,
        xy_tolerance: float = XY_TOLERANCE,
        z_tolerance: float = Z_TOLERANCE,
        rest_tolerance: float = REST_TOLERANCE,
        reward_grasp_weight: float = 1.0,
        reward_align_weight: float = 1.0,
        **kwargs: Any,
    ):
        self._task_arguments(
            positive={
                "xy_tolerance": xy_tolerance,
                "z_tolerance": z_tolerance,
                "rest_tolerance": rest_tolerance,
            },
            weights={"reward_grasp_weight": reward_grasp_weight, "reward_align_weight": reward_align_weight},
        )
        super().__init__(**kwargs)

    def _setup_episode(self) -> str:
        self.place_cubes(self.sample_cube_positions(self.n_cubes))
        return self._instruction(TEMPLATES, top=self.colors[0], base=self.colors[1])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        top, base = p.cube_pos(0), p.cube_pos(1)
        above = base + np.array([0.0, 0.0, 2 * CUBE_HALF])
        stack_dist = float(np.linalg.norm(top - above))
        xy = float(np.linalg.norm(top[:2] - base[:2]))
        touching = p.finger_contacts(0)
        reach = float(np.linalg.norm(p.tcp_pos - top))
        success = (
            xy < self.xy_tolerance
            and abs(top[2] - above[2]) < self.z_tolerance
            and base[2] < TABLE_Z + CUBE_HALF + self.rest_tolerance
            and touching == 0
        )
        align = self.reward_align_weight * self.shaped(stack_dist)
        return self._score(
            success, reach, {"stack_distance": stack_dist}, {"reward_align": align}, grasped=touching == 2
        )

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
        z = base[2] + 2 * CUBE_HALF + RELEASE_GAP - offset[2]  # just above the base cube
        return self._release_waypoint(
            goal_xy=goal_xy,
            release_z=z,
            yaw=yaw,
            open_yaw=cur_yaw,
            carried=lambda tcp, target: np.linalg.norm(tcp - target) < 0.01 and abs(turn) < 0.05,
            lowered=lambda tcp: abs(tcp[2] - z) < 0.004 and np.linalg.norm(tcp[:2] - goal_xy) < 0.004,
        )
