"""``fastvla/PlaceCube-v0``: put the cube named by its colour into the target zone."""

from __future__ import annotations

import numpy as np

from fastvla.envs.base import SPAWN_HIGH, SPAWN_LOW, TabletopEnv
from fastvla.envs.physics import CUBE_HALF, TABLE_Z
from fastvla.envs.pick_cube import CARRY_Z, PickAndPlaceExpert

TEMPLATES = (
    "put the {color} cube in the white circle",
    "place the {color} cube on the white target",
    "move the {color} block into the white circle",
    "pick up the {color} cube and put it on the white target",
)
ZONE_RADIUS = 0.06
ZONE_RGBA = np.array([0.95, 0.95, 0.95, 1.0])
RELEASE_HEIGHT = 0.012  # cube bottom above the table when the expert opens the gripper


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
    ``reward_reach`` (TCP to cube), ``reward_grasp``, ``reward_place = 1 - tanh(5 d_zone)`` (cube to zone
    centre, horizontal), ``reward_success``; terms in ``info`` with ``zone_distance``.

    ## Starting State
    Cubes and zone centre uniformly in x in [0.38, 0.62] m, y in [-0.18, 0.18] m; the zone at least 10 cm
    from every cube.

    ## Episode End
    Terminates when the named cube rests on the table with its centre inside the zone and no finger
    touches it; truncated after 120 steps.

    ## Arguments
    See :class:`fastvla.envs.base.TabletopEnv`; ``num_distractors`` defaults to 1 (0-3).

    ## Version History
    * v0: initial version.
    """

    n_task_cubes = 1
    default_distractors = 1
    quiet_phases = (2, 6)

    def _setup_episode(self) -> str:
        while True:
            zone = self.np_random.uniform(SPAWN_LOW, SPAWN_HIGH)
            cubes = self.sample_cube_positions(self.n_cubes, extra_points=[zone, zone])
            # Keep the zone clear of cubes and the carry distance non-trivial.
            if all(np.linalg.norm(c[:2] - zone) >= 0.1 for c in cubes):
                break
        self.physics.set_zone(np.array([zone[0], zone[1], TABLE_Z]), ZONE_RGBA, ZONE_RADIUS)
        self.place_cubes(cubes)
        template = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))]
        return template.format(color=self.colors[0])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        p = self.physics
        cube = p.cube_pos(0)
        dist = float(np.linalg.norm(p.tcp_pos - cube))
        zone_dist = float(np.linalg.norm(cube[:2] - p.zone_pos[:2]))
        touching = p.finger_contacts(0)
        resting = cube[2] < TABLE_Z + CUBE_HALF + 0.005
        success = zone_dist < ZONE_RADIUS and resting and touching == 0
        terms = {
            "reach_distance": dist,
            "zone_distance": zone_dist,
            "reward_reach": 1.0 - float(np.tanh(5.0 * dist)),
            "reward_grasp": float(touching == 2),
            "reward_place": 1.0 - float(np.tanh(5.0 * zone_dist)),
            "reward_success": float(success),
        }
        return sum(v for k, v in terms.items() if k.startswith("reward_")), success, terms

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        wp = self._grasp_waypoint(0)
        if wp is not None:
            return wp
        p = self.physics
        tcp, cube, zone = p.tcp_pos, p.cube_pos(0), p.zone_pos
        offset = cube - tcp  # where the cube sits in the hand
        yaw = float(np.arctan2(p.tcp_mat[1, 0], p.tcp_mat[0, 0]))
        if self._phase == 4:  # carry above the zone
            target = np.array([zone[0] - offset[0], zone[1] - offset[1], CARRY_Z])
            self._advance(np.linalg.norm(tcp - target) < 0.015)
            if self._phase == 4:
                return target, yaw, False
        if self._phase == 5:  # lower onto the table
            z = TABLE_Z + CUBE_HALF + RELEASE_HEIGHT - offset[2]
            target = np.array([zone[0] - offset[0], zone[1] - offset[1], z])
            self._advance(abs(tcp[2] - z) < 0.006)
            if self._phase == 5:
                return target, yaw, False
        if self._phase == 6:  # open
            self._advance(True, min_steps=3)
            if self._phase == 6:
                return tcp, yaw, True
        return np.array([tcp[0], tcp[1], CARRY_Z]), yaw, True
