"""``fastvla/ReachCube-v0``: move the gripper to the cube named by its colour."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastvla.envs.base import TabletopEnv

TEMPLATES = (
    "reach the {color} cube",
    "move the gripper to the {color} cube",
    "go to the {color} cube",
    "touch the {color} block",
)
SUCCESS_RADIUS = 0.05  # default: metres between the TCP and the target cube's centre
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
    ``reward = reward_reach + reward_success``, each term already weighted:

    * ``reward_reach = reward_reach_weight * (1 - tanh(k d))``, ``d`` the TCP-to-cube distance and
      ``k = distance_reward_scale``;
    * ``reward_success = reward_success_weight`` on success, else 0.

    Both terms and ``reach_distance`` are in ``info``.

    ## Starting State
    Arm at the ``home`` keyframe; cubes uniformly in the spawn region (by default x in [0.38, 0.62] m,
    y in [-0.18, 0.18] m), at least ``min_separation`` (8 cm) apart, random yaw.

    ## Episode End
    Terminates when the TCP is within ``success_radius`` (5 cm) of the target cube's centre
    (``info["is_success"]``); truncated after 40 steps (4 s at 10 Hz).

    ## Arguments
    ``gym.make("fastvla/ReachCube-v0", success_radius=0.03)``; invalid values raise ``ValueError``.

    | Parameter | Type | Default | Description |
    |---|---|---|---|
    | `success_radius` | **float** | `0.05` | TCP-to-cube-centre distance (m) that counts as success |
    | `reward_reach_weight` | **float** | `1.0` | Weight of the _reward_reach_ term (see Rewards) |
    | `reward_success_weight` | **float** | `1.0` | Weight of the _reward_success_ term (see Rewards) |
    | `distance_reward_scale` | **float** | `5.0` | `k` (1/m) in the shaped term `1 - tanh(k d)` |
    | `num_distractors` | **int** | `2` | Cubes of other colours besides the target (0-3) |

    Scene, rendering, control and spawn arguments (``cameras``, ``image_size``, ``control_mode``,
    ``spawn_low``, ...): see :class:`fastvla.envs.base.TabletopEnv`.

    ## Version History
    * v0: initial version. Success radius and reward weights became constructor arguments later, with
      defaults that keep v0 episodes identical.
    """

    n_task_cubes = 1
    default_distractors = 2
    # The task's own arguments (set by `_task_arguments`).
    success_radius: float

    def __init__(
        self,
        *,
        success_radius: float = SUCCESS_RADIUS,
        **kwargs: Any,
    ):
        self._task_arguments(positive={"success_radius": success_radius})
        super().__init__(**kwargs)

    def _setup_episode(self) -> str:
        self.place_cubes(self.sample_cube_positions(self.n_cubes))
        return self._instruction(TEMPLATES, color=self.colors[0])

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        dist = float(np.linalg.norm(self.physics.tcp_pos - self.physics.cube_pos(0)))
        success = dist < self.success_radius
        return self._score(success, dist)

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        target = self.physics.cube_pos(0) + np.array([0.0, 0.0, HOVER])
        return target, self.physics.cube_yaw(0), True
