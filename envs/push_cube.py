"""``fastvla/PushCube-v0``: push the cube named by its colour into the target zone."""

from __future__ import annotations

import numpy as np

from fastvla.envs.base import SPAWN_HIGH, SPAWN_LOW, TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z

TEMPLATES = (
    "push the {color} cube into the white circle",
    "slide the {color} cube to the white target",
    "push the {color} block onto the white circle",
)
ZONE_RADIUS = 0.05
ZONE_RGBA = np.array([0.95, 0.95, 0.95, 1.0])
SUCCESS_RADIUS = 0.04  # cube centre to zone centre, horizontal
PUSH_Z = TABLE_Z + 0.03  # TCP height while pushing (closed fingertips 1 cm above the table)
BEHIND = 0.06  # TCP distance behind the cube centre when pushing (clears a 45-degree corner)
PUSH_DISTANCE = (0.1, 0.18)


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
    ``reward_reach = 1 - tanh(5 d)`` (TCP to the push position behind the cube),
    ``reward_push = 1 - tanh(5 d_zone)`` (cube to zone centre), ``reward_success``; terms in ``info`` with
    ``zone_distance``.

    ## Starting State
    Cube uniformly in the spawn region; zone 10-18 cm away in a random direction, inside the spawn region.

    ## Episode End
    Terminates when the cube's centre is within 4 cm of the zone centre; truncated after 120 steps.

    ## Arguments
    See :class:`fastvla.envs.base.TabletopEnv`; ``num_distractors`` defaults to 1 (0-3).

    ## Version History
    * v0: initial version.
    """

    n_task_cubes = 1
    default_distractors = 1

    def _setup_episode(self) -> str:
        rng = self.np_random
        while True:
            cube = rng.uniform(SPAWN_LOW, SPAWN_HIGH)
            angle = rng.uniform(-np.pi, np.pi)
            zone = cube + rng.uniform(*PUSH_DISTANCE) * np.array([np.cos(angle), np.sin(angle)])
            if np.all(zone >= SPAWN_LOW) and np.all(zone <= SPAWN_HIGH):
                break
        # Distractors stay clear of the cube, the zone and the straight path between them.
        path = [cube + t * (zone - cube) for t in (0.0, 0.5, 1.0)]
        others = self.sample_cube_positions(self.n_cubes - 1, extra_points=[*path, 2 * cube - path[1]])
        self.physics.set_zone(np.array([zone[0], zone[1], TABLE_Z]), ZONE_RGBA, ZONE_RADIUS)
        self.place_cubes([np.array([cube[0], cube[1], TABLE_Z + CUBE_HALF]), *others])
        template = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))]
        return template.format(color=self.colors[0])

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
        success = zone_dist < SUCCESS_RADIUS
        terms = {
            "reach_distance": dist,
            "zone_distance": zone_dist,
            "reward_reach": 1.0 - float(np.tanh(5.0 * dist)),
            "reward_push": 1.0 - float(np.tanh(5.0 * zone_dist)),
            "reward_success": float(success),
        }
        return terms["reward_reach"] + terms["reward_push"] + terms["reward_success"], success, terms

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
