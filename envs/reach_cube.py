"""``fastvla/ReachCube-v0``: move the gripper to the cube named by its colour."""

from __future__ import annotations

import numpy as np

from fastvla.envs.base import TabletopEnv

TEMPLATES = (
    "reach the {color} cube",
    "move the gripper to the {color} cube",
    "go to the {color} cube",
    "touch the {color} block",
)
SUCCESS_RADIUS = 0.05  # metres between the TCP and the target cube's centre
HOVER = 0.025  # the expert stops this far above the cube's centre


class ReachCubeEnv(TabletopEnv):
    """Reach the cube whose colour the instruction names.

    ## Description
    A 7-joint arm with a parallel gripper stands at the back of a table holding ``1 + num_distractors``
    cubes of distinct random colours. The instruction ("reach the red cube") names the target by colour.

    ## Action Space
    ``ee_delta`` (default): ``Box(-1, 1, (7,))`` = TCP translation (5 cm/unit), rotation (0.3 rad/unit)
    and gripper (+1 open, -1 closed), tracked by damped-least-squares IK. ``joint_pos``: 7 joint targets
    (rad) + gripper.

    ## Observation Space
    ``Dict(pixels={cam: uint8 (H, W, 3)}, [depth={cam: float32 (H, W)}], agent_pos=float32 (8,)
    [, ee_pos=float32 (3,)])``. The instruction is ``info["task"]`` and ``env.unwrapped.task_description``.

    ## Rewards
    ``reward_reach = 1 - tanh(5 d)`` with ``d`` the TCP-to-cube distance, plus ``reward_success = 1`` on
    success; both terms and ``reach_distance`` are in ``info``.

    ## Starting State
    Arm at the ``home`` keyframe; cubes uniformly in x in [0.38, 0.62] m, y in [-0.18, 0.18] m, at least
    8 cm apart, random yaw.

    ## Episode End
    Terminates when the TCP is within 5 cm of the target cube's centre (``info["is_success"]``);
    truncated after 40 steps (4 s at 10 Hz).

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
        dist = float(np.linalg.norm(self.physics.tcp_pos - self.physics.cube_pos(0)))
        success = dist < SUCCESS_RADIUS
        terms = {
            "reach_distance": dist,
            "reward_reach": 1.0 - float(np.tanh(5.0 * dist)),
            "reward_success": float(success),
        }
        return terms["reward_reach"] + terms["reward_success"], success, terms

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        target = self.physics.cube_pos(0) + np.array([0.0, 0.0, HOVER])
        return target, self.physics.cube_yaw(0), True
