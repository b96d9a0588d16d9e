"""``fastvla/PlaceCube-v0``: put the cube named by its colour into the target zone."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z
from fastvla.envs.pick_cube import PickAndPlaceExpert

TEMPLATES = (
    "put the {color} cube in the white circle",
    "place the {color} cube on the white target",
    "move the {color} block into the white circle",
    "pick up the {color} cube and put it on the white target",
)
# Defaults of the task's arguments.
ZONE_RADIUS = 0.06  # drawn zone radius = success radius (cube centre to zone centre, horizontal), metres
ZONE_CLEARANCE = 0.1  # minimum distance from the zone centre to every cube at reset, metres
REST_TOLERANCE = 0.005  # "resting on the table": cube centre at most this above its resting height

ZONE_RGBA = np.array([0.95, 0.95, 0.95, 1.0])
RELEASE_HEIGHT = 0.012  # cube bottom above the table when the expert opens the gripper
MAX_LAYOUT_TRIES = 1000


class PlaceCubeEnv(PickAndPlaceExpert, TabletopEnv):
    """Place the cube whose colour the instruction names inside the white target zone.

    ## Description
    A white disk of radius 6 cm lies on the table among ``1 + num_distractors`` coloured cubes
    ("put the red cube in the white circle"). The arm must carry the named cube into the disk and let go.

    ## Action Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Observation Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Rewards
    The sum of four weighted terms, each in ``info`` (with ``reach_distance`` and ``zone_distance``):

    * ``reward_reach = reward_reach_weight * (1 - tanh(k d))``, TCP to cube, ``k = distance_reward_scale``;
    * ``reward_grasp = reward_grasp_weight`` while both fingers touch the cube;
    * ``reward_place = reward_place_weight * (1 - tanh(k d_zone))``, cube to zone centre, horizontal;
    * ``reward_success = reward_success_weight`` on success.

    ## Starting State
    Cubes and zone centre uniformly in the spawn region (by default x in [0.38, 0.62] m, y in
    [-0.18, 0.18] m); the zone at least ``zone_clearance`` (10 cm) from every cube.

    ## Episode End
    Terminates when the named cube rests on the table (centre at most ``rest_tolerance`` above its resting
    height) with its centre inside the zone and no finger touches it; truncated after 120 steps.

    ## Arguments
    | Parameter | Type | Default | Description |
    |---|---|---|---|
    | `zone_radius` | **float** | `0.06` | Radius (m) of the drawn zone; the cube's centre must be inside it |
    | `zone_clearance` | **float** | `0.1` | Least distance (m) from the zone centre to any cube at reset |
    | `rest_tolerance` | **float** | `0.005` | How far (m) above its resting height the cube still rests |
    | `reward_reach_weight` | **float** | `1.0` | Weight of the _reward_reach_ term (see Rewards) |
    | `reward_grasp_weight` | **float** | `1.0` | Weight of the _reward_grasp_ term (see Rewards) |
    | `reward_place_weight` | **float** | `1.0` | Weight of the _reward_place_ term (see Rewards) |
    | `reward_success_weight` | **float** | `1.0` | Weight of the _reward_success_ term (see Rewards) |
    | `distance_reward_scale` | **float** | `5.0` | `k` (1/m) in the shaped terms `1 - tanh(k d)` |
    | `num_distractors` | **int** | `1` | Cubes of other colours besides the target (0-3) |

    Scene, rendering, control and spawn arguments: see :class:`fastvla.envs.base.TabletopEnv`. A
    ``zone_clearance`` the spawn region cannot satisfy raises ``RuntimeError`` at ``reset``.

    ## Version History
    * v0: initial version. Zone size, clearance, rest tolerance and reward weights became constructor
      arguments later, with defaults that keep v0 episodes identical.
    """

    n_task_cubes = 1
    default_distractors = 1
    quiet_phases = (2, 6)
    # The task's own arguments (set by `_task_arguments`).
    zone_radius: float
    zone_clearance: float
    rest_tolerance: float
    reward_grasp_weight: float
    reward_place_weight: float

    def __init__(
        self,
        *,
        zone_radius: float = ZONE_RADIUS,
        zone_clearance: float = ZONE_CLEARANCE,
        rest_tolerance: float = REST_TOLERANCE,
        reward_grasp_weight: float = 1.0,
        reward_place_weight: float = 1.0,
        **kwargs: Any,
    ):
        self._task_arguments(
            positive={
                "zone_radius": zone_radius,
                "zone_clearance": zone_clearance,
                "rest_tolerance": rest_tolerance,
            },
            weights={"reward_grasp_weight": reward_grasp_weight, "reward_place_weight": reward_place_weight},
        )
        super().__init__(**kwargs)

    def _setup_episode(self) -> str:
        for _ in range(MAX_LAYOUT_TRIES):
            zone = self.np_random.uniform(self.spawn_low, self.spawn_high)
            cubes = self.sample_cube_positions(self.n_cubes, extra_points=[zone, zone])
            # Keep the zone clear of cubes and the carry distance non-trivial.
            if all(np.linalg.norm(c[:2] - zone) >= self.zone_clearance for c in cubes):
                break
        else:
            raise RuntimeError(
                f"PlaceCubeEnv: no layout with zone_clearance={self.zone_clearance} in the spawn region "
                f"{tuple(self.spawn_low)}..{tuple(self.spawn_high)} after {MAX_LAYOUT_TRIES} tries; "
                "lower zone_clearance or num_distractors, or widen the spawn region"
            )
        self.physics.set_zone(np.array([zone[0], zone[1], TABLE_Z]), ZONE_RGBA, self.zone_radius)
        self.place_cubes(cubes)
        return self._instruction(TEMPLATES, color=self.colors[0])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        cube = p.cube_pos(0)
        dist = float(np.linalg.norm(p.tcp_pos - cube))
        zone_dist = float(np.linalg.norm(cube[:2] - p.zone_pos[:2]))
        touching = p.finger_contacts(0)
        resting = cube[2] < TABLE_Z + CUBE_HALF + self.rest_tolerance
        success = zone_dist < self.zone_radius and resting and touching == 0
        place = self.reward_place_weight * self.shaped(zone_dist)
        return self._score(
            success, dist, {"zone_distance": zone_dist}, {"reward_place": place}, grasped=touching == 2
        )

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        wp = self._grasp_waypoint(0)
        if wp is not None:
            return wp
        p = self.physics
        offset = p.cube_pos(0) - p.tcp_pos  # where the cube sits in the hand
        yaw = float(np.arctan2(p.tcp_mat[1, 0], p.tcp_mat[0, 0]))
        z = TABLE_Z + CUBE_HALF + RELEASE_HEIGHT - offset[2]  # onto the table
        return self._release_waypoint(
            goal_xy=p.zone_pos[:2] - offset[:2],
            release_z=z,
            yaw=yaw,
            open_yaw=yaw,
            carried=lambda tcp, target: np.linalg.norm(tcp - target) < 0.015,
            lowered=lambda tcp: abs(tcp[2] - z) < 0.006,
        )
