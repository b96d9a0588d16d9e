"""Shared machinery of the tabletop tasks: spaces, control modes, rendering, the expert's action mapping.

A task subclasses :class:`TabletopEnv` and implements three hooks:

* ``_setup_episode()`` places objects with ``self.np_random`` and returns the language instruction;
* ``_evaluate()`` returns ``(reward, is_success, reward_terms)`` for the current state;
* ``_expert_waypoint()`` returns the expert's next TCP target ``(position, yaw, gripper_open)`` from
  privileged state, advancing its own phase (reset in ``reset``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from fastvla.envs.colors import COLORS
from fastvla.envs.physics import (
    CUBE_HALF,
    FINGER_MAX,
    N_CUBES,
    TABLE_Z,
    TabletopPhysics,
    down_orientation,
    rotation_error,
    rotvec_to_mat,
)
from fastvla.envs.rendering import CameraRenderer

CAMERAS = ("front", "side", "wrist")
CONTROL_MODES = ("ee_delta", "joint_pos")
# TCP target bounds (x, y, z) in metres: the reachable part of the table, above the surface. A property
# of the robot and scene (like the MJCF), so not a constructor argument.
WORKSPACE_LOW = np.array([0.22, -0.38, TABLE_Z + 0.022])
WORKSPACE_HIGH = np.array([0.78, 0.38, TABLE_Z + 0.45])
# The defaults of the shared constructor arguments (the v0 task definitions).
EE_POS_SCALE = 0.05  # metres of TCP motion per unit of ee_delta action (per 0.1 s step)
EE_ROT_SCALE = 0.3  # radians of TCP rotation per unit of ee_delta action
SPAWN_LOW = (0.38, -0.18)  # cube spawn region (x, y), metres
SPAWN_HIGH = (0.62, 0.18)
MIN_SEPARATION = 0.08  # minimum centre distance between spawned objects, metres
DISTANCE_REWARD_SCALE = 5.0  # k in the shaped terms 1 - tanh(k d), 1/m


class TabletopEnv(gym.Env, EzPickle):
    """Base class of the FastVLA tabletop tasks (see the task classes for their docstrings).

    Args:
        cameras: Camera names to render, any of ``("front", "side", "wrist")``.
        image_size: Image size, an int (square) or ``(height, width)``.
        depth: Also return ``depth`` images (float32 metres along each camera's optical axis).
        control_mode: ``"ee_delta"`` (7-D: dx, dy, dz, droll, dpitch, dyaw, gripper in [-1, 1]; 1 unit
            = 5 cm / 0.3 rad per step; gripper +1 open, -1 closed) or ``"joint_pos"`` (7 absolute joint
            targets in radians + gripper in [-1, 1]).
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns the first camera's image).
        expert_noise: Std of Gaussian noise added to the expert's normalised ee_delta action.
        num_distractors: Extra cubes of other colours (task-dependent maximum).
        shadows: Render shadows (slower on software GL).
        reflections: Render reflections (slower on software GL).
        ee_pos_obs: Add ``ee_pos`` (float32 (3,), TCP position in metres) to the observation.
        terminate_on_success: End the episode (``terminated=True``) once the task succeeds.
        instruction_colors: Colours the instruction may name (the task cubes' colours), e.g. every colour
            but one for training and that one for a held-out evaluation; ``None`` = all of :data:`COLORS`.
            Distractors take any colour not in use, so an excluded colour still appears in the scene.
        reward_reach_weight: Weight of the ``reward_reach`` term (``1 - tanh(k d)``, TCP to its target).
        reward_success_weight: Weight of the ``reward_success`` term (1 on success).
        distance_reward_scale: ``k`` (1/m) in every shaped term ``1 - tanh(k d)``.
        spawn_low: Lower ``(x, y)`` corner of the region cubes (and zones) spawn in, metres.
        spawn_high: Upper ``(x, y)`` corner of the spawn region, metres.
        min_separation: Minimum distance between spawned cube centres (and zones), metres.
        ee_pos_scale: Metres of TCP motion per unit of ``ee_delta`` translation action.
        ee_rot_scale: Radians of TCP rotation per unit of ``ee_delta`` rotation action.

    Each task adds its own arguments (success thresholds, its reward terms' weights) and lists them with
    these in its ``## Arguments`` table. The defaults define the v0 tasks; the scripted experts are tuned
    for them.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    n_task_cubes: ClassVar[int] = 1
    max_distractors: ClassVar[int] = N_CUBES - 1
    default_distractors: ClassVar[int] = 2

    def __init__(
        self,
        cameras: tuple[str, ...] | list[str] = ("front", "wrist"),
        image_size: int | tuple[int, int] = 128,
        depth: bool = False,
        control_mode: str = "ee_delta",
        render_mode: str | None = None,
        expert_noise: float = 0.0,
        num_distractors: int | None = None,
        shadows: bool = False,
        reflections: bool = False,
        ee_pos_obs: bool = False,
        terminate_on_success: bool = True,
        instruction_colors: tuple[str, ...] | list[str] | None = None,
        reward_reach_weight: float = 1.0,
        reward_success_weight: float = 1.0,
        distance_reward_scale: float = DISTANCE_REWARD_SCALE,
        spawn_low: tuple[float, float] = SPAWN_LOW,
        spawn_high: tuple[float, float] = SPAWN_HIGH,
        min_separation: float = MIN_SEPARATION,
        ee_pos_scale: float = EE_POS_SCALE,
        ee_rot_scale: float = EE_ROT_SCALE,
    ):
        if num_distractors is None:
            num_distractors = self.default_distractors
        # Every argument goes to EzPickle, so a pickled env (an async vector env's worker) is rebuilt
        # identically; a task's own arguments come from `_task_arguments`, called before this.
        EzPickle.__init__(
            self,
            cameras=cameras,
            image_size=image_size,
            depth=depth,
            control_mode=control_mode,
            render_mode=render_mode,
            expert_noise=expert_noise,
            num_distractors=num_distractors,
            shadows=shadows,
            reflections=reflections,
            ee_pos_obs=ee_pos_obs,
            terminate_on_success=terminate_on_success,
            instruction_colors=instruction_colors,
            reward_reach_weight=reward_reach_weight,
            reward_success_weight=reward_success_weight,
            distance_reward_scale=distance_reward_scale,
            spawn_low=spawn_low,
            spawn_high=spawn_high,
            min_separation=min_separation,
            ee_pos_scale=ee_pos_scale,
            ee_rot_scale=ee_rot_scale,
            **self.__dict__.get("_task_args", {}),
        )
        self.cameras = tuple(cameras)
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad or not self.cameras:
            raise ValueError(f"unknown camera(s) {bad or list(cameras)}; available: {list(CAMERAS)}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if min(self.image_size) < 8:
            raise ValueError(f"image_size {image_size} is too small; use at least 8 pixels per side")
        if control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode {control_mode!r} not supported; use one of {list(CONTROL_MODES)}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r} not supported; use None or 'rgb_array'")
        if not 0 <= num_distractors <= self.max_distractors:
            raise ValueError(
                f"num_distractors={num_distractors} out of range for {type(self).__name__}; "
                f"use 0..{self.max_distractors}"
            )
        named = tuple(COLORS) if instruction_colors is None else tuple(instruction_colors)
        unknown = [c for c in named if c not in COLORS]
        if unknown or len(set(named)) < self.n_task_cubes:
            raise ValueError(
                f"instruction_colors {list(named)} invalid for {type(self).__name__}: "
                + (f"unknown {unknown}; " if unknown else "")
                + f"give at least {self.n_task_cubes} distinct colour(s) of {list(COLORS)}"
            )
        self.instruction_colors = named
        if expert_noise < 0:
            raise ValueError(f"expert_noise={expert_noise} must be >= 0")
        self.depth = bool(depth)
        self.control_mode = control_mode
        self.render_mode = render_mode
        self.expert_noise = float(expert_noise)
        self.num_distractors = int(num_distractors)
        self.ee_pos_obs = bool(ee_pos_obs)
        self.terminate_on_success = bool(terminate_on_success)
        self.reward_reach_weight = self._number("reward_reach_weight", reward_reach_weight)
        self.reward_success_weight = self._number("reward_success_weight", reward_success_weight)
        self.distance_reward_scale = self._number(
            "distance_reward_scale", distance_reward_scale, positive=True
        )
        self.spawn_low, self.spawn_high = self._spawn_region(spawn_low, spawn_high)
        self.min_separation = self._number("min_separation", min_separation, positive=True)
        self.ee_pos_scale = self._number("ee_pos_scale", ee_pos_scale, positive=True)
        self.ee_rot_scale = self._number("ee_rot_scale", ee_rot_scale, positive=True)

        self.physics = TabletopPhysics()
        self.n_cubes = self.n_task_cubes + self.num_distractors
        for i in range(self.n_cubes, N_CUBES):
            self.physics.disable_cube(i)
        self._renderer = CameraRenderer(self.physics.model, *self.image_size, shadows, reflections)

        self.observation_space = self._make_observation_space()
        if control_mode == "ee_delta":
            self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        else:
            low = np.append(self.physics.joint_low, -1.0).astype(np.float32)
            high = np.append(self.physics.joint_high, 1.0).astype(np.float32)
            self.action_space = spaces.Box(low, high, dtype=np.float32)
        self.task_description = ""
        self.colors: list[str] = []  # colour name of each active cube
        self._phase = 0
        self._phase_steps = 0
        self._last_obs_images: dict[str, np.ndarray] = {}

    # --- arguments ----------------------------------------------------------------------------------
    def _number(self, name: str, value: Any, *, positive: bool = False) -> float:
        """``value`` as a float, or a ``ValueError`` naming the argument, its value and what it must be."""
        try:
            number = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number) or (positive and number <= 0):
            need = "a positive number" if positive else "a finite number"
            raise ValueError(f"{type(self).__name__}: {name}={value!r} must be {need}")
        return number

    def _range(self, name: str, value: Any) -> tuple[float, float]:
        """A ``(low, high)`` pair of positive numbers with ``low <= high``, or a ``ValueError``."""
        pair = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
        if len(pair) != 2:
            raise ValueError(f"{type(self).__name__}: {name}={value!r} must be a (low, high) pair")
        low, high = (self._number(name, v, positive=True) for v in pair)
        if low > high:
            raise ValueError(f"{type(self).__name__}: {name}={value!r} has low > high; give (low, high)")
        return low, high

    def _spawn_region(self, low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
        corners = []
        for name, corner in (("spawn_low", low), ("spawn_high", high)):
            xy = tuple(corner) if isinstance(corner, (tuple, list, np.ndarray)) else ()
            if len(xy) != 2:
                raise ValueError(f"{type(self).__name__}: {name}={corner!r} must be an (x, y) pair in metres")
            corners.append(np.array([self._number(name, v) for v in xy]))
        lo, hi = corners
        inside = np.all(lo >= WORKSPACE_LOW[:2]) and np.all(hi <= WORKSPACE_HIGH[:2])
        if not np.all(lo < hi) or not inside:
            raise ValueError(
                f"{type(self).__name__}: spawn region {tuple(low)}..{tuple(high)} invalid; spawn_low must be "
                f"below spawn_high in x and y, both inside the workspace {tuple(WORKSPACE_LOW[:2])}.."
                f"{tuple(WORKSPACE_HIGH[:2])}"
            )
        return lo, hi

    def _task_arguments(
        self,
        positive: dict[str, Any] | None = None,
        weights: dict[str, Any] | None = None,
        ranges: dict[str, Any] | None = None,
    ) -> None:
        """Validate a task's own constructor arguments and set them as attributes of the same names.

        Call it in the task's ``__init__`` before ``super().__init__``, which hands the arguments as given
        to EzPickle with the shared ones.

        Args:
            positive: Thresholds and distances, each a positive number.
            weights: Reward weights, each a finite number (0 drops the term, negative ones are allowed).
            ranges: ``(low, high)`` pairs of positive numbers.
        """
        self._task_args = {**(positive or {}), **(weights or {}), **(ranges or {})}
        for name, value in (positive or {}).items():
            setattr(self, name, self._number(name, value, positive=True))
        for name, value in (weights or {}).items():
            setattr(self, name, self._number(name, value))
        for name, value in (ranges or {}).items():
            setattr(self, name, self._range(name, value))

    def shaped(self, distance: float) -> float:
        """The shaped reward ``1 - tanh(k d)`` of a distance in metres (``k = distance_reward_scale``)."""
        return 1.0 - float(np.tanh(self.distance_reward_scale * distance))

    def _score(
        self,
        success: bool,
        reach_distance: float,
        measures: dict[str, float] | None = None,
        rewards: dict[str, float] | None = None,
        grasped: bool | None = None,
    ) -> tuple[float, bool, dict[str, float]]:
        """A task's ``_evaluate`` result: the shared reward terms around the task's own, summed.

        Args:
            success: whether the task is solved now.
            reach_distance: TCP to where it should be (metres), shaped into ``reward_reach``.
            measures: the task's distances and heights, reported in ``info`` after ``reach_distance``.
            rewards: the task's own weighted terms (``{"reward_place": ...}``).
            grasped: for grasping tasks, whether both fingers hold the cube (``reward_grasp``, weighted by
                the task's ``reward_grasp_weight``); ``None`` for tasks without the term.

        Returns:
            ``(reward, success, terms)``: the reward sums ``reward_reach``, ``reward_grasp``, the task's terms
            and ``reward_success`` in that order; ``terms`` holds every measure and term for ``info``.
        """
        terms = {"reach_distance": reach_distance, **(measures or {})}
        terms["reward_reach"] = self.reward_reach_weight * self.shaped(reach_distance)
        if grasped is not None:
            terms["reward_grasp"] = self.reward_grasp_weight * float(grasped)
        terms.update(rewards or {})
        terms["reward_success"] = self.reward_success_weight * float(success)
        return sum(v for k, v in terms.items() if k.startswith("reward_")), success, terms

    def _instruction(self, templates: tuple[str, ...], **names: str) -> str:
        """One of ``templates`` (drawn from ``self.np_random``) filled with ``names`` (``color="red"``)."""
        return templates[int(self.np_random.integers(len(templates)))].format(**names)

    # --- spaces and observations ---------------------------------------------------------------------
    def _make_observation_space(self) -> spaces.Dict:
        h, w = self.image_size
        pix = spaces.Dict({c: spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.cameras})
        items: dict[str, spaces.Space] = {"pixels": pix}
        if self.depth:
            items["depth"] = spaces.Dict(
                {c: spaces.Box(0.0, np.inf, (h, w), np.float32) for c in self.cameras}
            )
        p = self.physics
        low = np.concatenate([p.joint_low, [0.0]]).astype(np.float32)
        high = np.concatenate([p.joint_high, [2 * FINGER_MAX]]).astype(np.float32)
        items["agent_pos"] = spaces.Box(low, high, dtype=np.float32)
        if self.ee_pos_obs:
            items["ee_pos"] = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        return spaces.Dict(items)

    def _agent_pos(self) -> np.ndarray:
        p = self.physics
        state = np.append(p.arm_qpos, p.gripper_opening).astype(np.float32)
        space = self.observation_space["agent_pos"]
        return np.clip(state, space.low, space.high)

    def _get_obs(self) -> dict[str, Any]:
        rgb, dep = self._renderer.render(self.physics.data, self.cameras, depth=self.depth)
        self._last_obs_images = rgb
        obs: dict[str, Any] = {"pixels": rgb}
        if self.depth:
            obs["depth"] = dep
        obs["agent_pos"] = self._agent_pos()
        if self.ee_pos_obs:
            obs["ee_pos"] = self.physics.tcp_pos.astype(np.float32)
        return obs

    # --- episode ------------------------------------------------------------------------------------
    def sample_cube_positions(self, n: int, extra_points: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Rejection-sample ``n`` cube centres (x, y, z) in the spawn region, apart from each other."""
        taken = [np.asarray(p)[:2] for p in extra_points or []]
        out = []
        for _ in range(n):
            for _attempt in range(1000):
                xy = self.np_random.uniform(self.spawn_low, self.spawn_high)
                if all(np.linalg.norm(xy - t) >= self.min_separation for t in taken):
                    break
            taken.append(xy)
            out.append(np.array([xy[0], xy[1], TABLE_Z + CUBE_HALF]))
        return out

    def assign_colors(self) -> None:
        """Give each active cube a distinct random colour (``self.colors[i]`` names cube ``i``).

        The task cubes (the first ``n_task_cubes``, the ones the instruction names) draw from
        ``instruction_colors``; distractors from every colour left.
        """
        named = list(self.instruction_colors)
        picks = self.np_random.permutation(len(named))[: self.n_task_cubes]
        self.colors = [named[k] for k in picks]
        rest = [c for c in COLORS if c not in self.colors]
        order = self.np_random.permutation(len(rest))[: self.n_cubes - self.n_task_cubes]
        self.colors += [rest[k] for k in order]
        for i, name in enumerate(self.colors):
            self.physics.set_cube_rgba(i, np.array(COLORS[name]))

    def place_cubes(self, positions: list[np.ndarray]) -> None:
        for i, pos in enumerate(positions):
            self.physics.set_cube_pose(i, pos, yaw=float(self.np_random.uniform(-np.pi / 4, np.pi / 4)))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        p = self.physics
        p.reset_home()
        # Park inactive cubes far below the table.
        for i in range(self.n_cubes, N_CUBES):
            p.set_cube_pose(i, np.array([0.0, 2.0 + i, -2.0]))
        # The target zone is hidden unless the task places it.
        p.set_zone(np.array([0.0, 0.0, -1.0]), rgba=np.zeros(4))
        self.assign_colors()
        self.task_description = self._setup_episode()
        p.forward()
        # Let the cubes settle onto the table.
        p.step(p.home_qpos, 1.0)
        self._phase = 0
        self._phase_steps = 0
        _, success, terms = self._evaluate()
        return self._get_obs(), self._info(success, terms)

    def _info(self, success: bool, terms: dict[str, float]) -> dict[str, Any]:
        return {"task": self.task_description, "is_success": bool(success), **terms}

    def _validate_action(self, action: Any) -> np.ndarray:
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"action must be a numeric array of shape {self.action_space.shape}: {exc}"
            ) from exc
        if arr.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {arr.shape}, expected {self.action_space.shape} for "
                f"control_mode={self.control_mode!r}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"action contains non-finite values at indices {np.flatnonzero(~np.isfinite(arr))}"
            )
        return np.clip(arr, self.action_space.low, self.action_space.high)

    def _ee_delta_to_joints(self, action: np.ndarray) -> np.ndarray:
        p = self.physics
        target_pos = np.clip(p.tcp_pos + action[:3] * self.ee_pos_scale, WORKSPACE_LOW, WORKSPACE_HIGH)
        target_mat = rotvec_to_mat(action[3:6] * self.ee_rot_scale) @ p.tcp_mat
        return p.solve_ik(target_pos, target_mat)

    def step(self, action):
        action = self._validate_action(action)
        if self.control_mode == "ee_delta":
            q_target = self._ee_delta_to_joints(action)
        else:
            q_target = action[:7]
        self.physics.step(q_target, (action[6 if self.control_mode == "ee_delta" else 7] + 1.0) / 2.0)
        self._phase_steps += 1
        reward, success, terms = self._evaluate()
        terminated = bool(success and self.terminate_on_success)
        return self._get_obs(), float(reward), terminated, False, self._info(success, terms)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        cam = self.cameras[0]
        if cam not in self._last_obs_images:
            self._last_obs_images, _ = self._renderer.render(self.physics.data, self.cameras)
        return self._last_obs_images[cam]

    def close(self) -> None:
        self._renderer.close()

    # --- expert -------------------------------------------------------------------------------------
    def _advance(self, reached: bool, min_steps: int = 0) -> None:
        """Move the expert to its next phase once ``reached`` (and after ``min_steps`` in this phase)."""
        if reached and self._phase_steps >= min_steps:
            self._phase += 1
            self._phase_steps = 0

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state (call once per step).

        Uses privileged simulator state: waypoints from the task's phase machine, tracked in TCP space
        and, in ``joint_pos`` mode, converted to joint targets with the same IK the env uses.

        Returns:
            float32 action in this env's action space (with ``expert_noise`` applied).
        """
        pos, yaw, grip_open = self._expert_waypoint()
        p = self.physics
        delta = (np.asarray(pos) - p.tcp_pos) / self.ee_pos_scale
        delta /= max(1.0, float(np.abs(delta).max()))  # keep the direction when saturating
        rot = rotation_error(down_orientation(yaw), p.tcp_mat) / self.ee_rot_scale
        rot /= max(1.0, float(np.abs(rot).max()))
        act = np.concatenate([delta, rot, [1.0 if grip_open else -1.0]])
        if self.expert_noise > 0:
            # Always draw (keeps the random stream aligned across phases), scale per phase.
            noise = self.np_random.normal(0.0, self.expert_noise, size=6)
            act[:6] += noise * self._expert_noise_scale()
        act = np.clip(act, -1.0, 1.0)
        if self.control_mode == "joint_pos":
            act = np.append(self._ee_delta_to_joints(act), act[6])
        return act.astype(np.float32)

    def _expert_noise_scale(self) -> float:
        """Fraction of ``expert_noise`` applied in the current phase (tasks mute it while the gripper
        closes or opens, where a jolt turns a demonstration into a failure rather than a recovery)."""
        return 1.0

    # --- task hooks ---------------------------------------------------------------------------------
    def _setup_episode(self) -> str:
        raise NotImplementedError

    def _evaluate(self) -> tuple[float, bool, dict[str, float]]:
        raise NotImplementedError

    def _expert_waypoint(self) -> tuple[np.ndarray, float, bool]:
        raise NotImplementedError
