"""``fastvla/PushCube-v0``: push the cube named by its colour into the target zone."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastvla.envs.base import TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z

TEMPLATES = (
    "push the {color} cube into the white circle",
    "slide the {color} cube to the white target",
    "push the {color} block onto the white circle",
)
# Defaults of the task's arguments.
ZONE_RADIUS = 0.05  # drawn zone radius, metres
SUCCESS_RADIUS = 0.04  # cube centre to zone centre, horizontal, metres
PUSH_DISTANCE = (0.1, 0.18)  # range of the cube-to-zone distance at reset, metres

ZONE_RGBA = np.array([0.95, 0.95, 0.95, 1.0])
PUSH_Z = TABLE_Z + 0.03  # TCP height while pushing (closed fingertips 1 cm above the table)
BEHIND = 0.06  # TCP distance behind the cube centre when pushing (clears a 45-degree corner)
MAX_LAYOUT_TRIES = 1000


class PushCubeEnv(TabletopEnv):
    """Push the cube whose colour the instruction names into the white target zone (no grasping).

    ## Description
    "push the blue cube into the white circle": the zone (radius 5 cm) lies 10-18 cm from the cube; the
    arm slides the cube across the table with closed fingers.

    ## Action Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Observation Space
    As in :class:`fastvla.envs.reach_cube.ReachCubeEnv`.

    ## Rewards
    The sum of three weighted terms, each in ``info`` (with ``reach_distance`` and ``zone_distance``):

    * ``reward_reach = reward_reach_weight * (1 - tanh(k d))``, TCP to the push position behind the cube,
      ``k = distance_reward_scale``;
    * ``reward_push = reward_push_weight * (1 - tanh(k d_zone))``, cube to zone centre, horizontal;
    * ``reward_success = reward_success_weight`` on success.

    ## Starting State
    Cube uniformly in the spawn region; zone ``push_distance`` (10-18 cm) away in a random direction,
    inside the spawn region.

    ## Episode End
    Terminates when the cube's centre is within ``success_radius`` (4 cm) of the zone centre; truncated
    after 120 steps.

    ## Arguments
    | Parameter | Type | Default | Description |
    |---|---|---|---|
    | `zone_radius` | **float** | `0.05` | Radius (m) of the drawn zone |
    | `success_radius` | **float** | `0.04` | Cube-centre-to-zone-centre distance (m) that counts as success |
    | `push_distance` | **tuple[float, float]** | `(0.1, 0.18)` | Cube-to-zone distance range (m) at reset |
    | `reward_reach_weight` | **float** | `1.0` | Weight of the _reward_reach_ term (see Rewards) |
    | `reward_push_weight` | **float** | `1.0` | Weight of the _reward_push_ term (see Rewards) |
    | `reward_success_weight` | **float** | `1.0` | Weight of the _reward_success_ term (see Rewards) |
    | `distance_reward_scale` | **float** | `5.0` | `k` (1/m) in the shaped terms `1 - tanh(k d)` |
    | `num_distractors` | **int** | `1` | Cubes of other colours besides the target (0-3) |

    Scene, rendering, control and spawn arguments: see :class:`fastvla.envs.base.TabletopEnv`. A
    ``push_distance`` that does not fit in the spawn region raises ``ValueError``.

    ## Version History
    * v0: initial version. Zone size, success radius, push distance and reward weights became constructor
      arguments later, with defaults that keep v0 episodes identical.
    """

    n_task_cubes = 1
    default_distractors = 1
    # The task's own arguments (set by `_task_arguments`).
    zone_radius: float
    success_radius: float
    push_distance: tuple[float, float]
    reward_push_weight: float

    def __init__(
        self,
        *,
        zone_radius: float = ZONE_RADIUS,
        success_radius: float = SUCCESS_RADIUS,
        push_distance: tuple[float, float] = PUSH_DISTANCE,
        reward_push_weight: float = 1.0,
        **kwargs: Any,
    ):
        self._task_arguments(
            positive={"zone_radius": zone_radius, "success_radius": success_radius},
            weights={"reward_push_weight": reward_push_weight},
            ranges={"push_distance": push_distance},
        )
        super().__init__(**kwargs)
        diagonal = float(np.linalg.norm(self.spawn_high - self.spawn_low))
        if self.push_distance[0] >= diagonal:
            raise ValueError(
                f"PushCubeEnv: push_distance={push_distance!r} starts beyond the spawn region's diagonal "
                f"({diagonal:.3f} m); lower it or widen spawn_low/spawn_high"
            )

    def _setup_episode(self) -> str:
        rng = self.np_random
        low, high = self.spawn_low, self.spawn_high
        for _ in range(MAX_LAYOUT_TRIES):
            cube = rng.uniform(low, high)
            angle = rng.uniform(-np.pi, np.pi)
            zone = cube + rng.uniform(*self.push_distance) * np.array([np.cos(angle), np.sin(angle)])
            if np.all(zone >= low) and np.all(zone <= high):
                break
        else:
            raise RuntimeError(
                f"PushCubeEnv: no zone push_distance={self.push_distance} from a cube inside the spawn "
                f"region {tuple(low)}..{tuple(high)} after {MAX_LAYOUT_TRIES} tries; lower push_distance"
            )
        # Distractors stay clear of the cube, the zone and the straight path between them.
        path = [cube + t * (zone - cube) for t in (0.0, 0.5, 1.0)]
        others = self.sample_cube_positions(self.n_cubes - 1, extra_points=[*path, 2 * cube - path[1]])
        self.physics.set_zone(np.array([zone[0], zone[1], TABLE_Z]), ZONE_RGBA, self.zone_radius)
        self.place_cubes([np.array([cube[0], cube[1], TABLE_Z + CUBE_HALF]), *others])
        return self._instruction(TEMPLATES, color=self.colors[0])

    def _push_frame(self) -> tuple[np.ndarray, np.ndarray]:
        cube, zone = self.physics.cube_pos(0), self.physics.zone_pos
        direction = zone[:2] - cube[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        return cube, direction

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        cube, direction = self._push_frame()
        behind = np.array([*(cube[:2] - BEHIND * direction), PUSH_Z])
        dist = float(np.linalg.norm(p.tcp_pos - behind))
        zone_dist = float(np.linalg.norm(cube[:2] - p.zone_pos[:2]))
        success = zone_dist < self.success_radius
        push = self.reward_push_weight * self.shaped(zone_dist)
        return self._score(success, dist, {"zone_distance": zone_dist}, {"reward_push": push})

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        tcp = self.physics.tcp_pos
        cube, direction = self._push_frame()
        # The closed fingers are symmetric: use the yaw within +-90 degrees (joint 7 has limits).
        yaw = float((np.arctan2(direction[1], direction[0]) + np.pi / 2) % np.pi - np.pi / 2)
        behind = cube[:2] - BEHIND * direction
        # Lateral offset of the TCP from the line through the cube towards the zone.
        rel = tcp[:2] - cube[:2]
        lateral = abs(rel[0] * direction[1] - rel[1] * direction[0])
        along = float(rel @ direction)
        if self._phase == 2 and (lateral > 0.025 or along > -0.02):
            self._phase, self._phase_steps = 0, 0  # lost the cube: go around again
        if self._phase == 0:  # above the push position
            target = np.array([*behind, PUSH_Z + 0.08])
            self._advance(np.linalg.norm(tcp[:2] - behind) < 0.008, min_steps=1)
            if self._phase == 0:
                return target, yaw, False
        if self._phase == 1:  # down behind the cube
            target = np.array([*behind, PUSH_Z])
            self._advance(abs(tcp[2] - PUSH_Z) < 0.008)
            if self._phase == 1:
                return target, yaw, False
        # Push: aim a little past the current contact point, re-centred on the cube every step.
        step = min(0.04, float(np.linalg.norm(self.physics.zone_pos[:2] - cube[:2])) + 0.005)
        return np.array([*(behind + step * direction), PUSH_Z]), yaw, False
