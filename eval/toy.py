"""A tiny, dependency-free reaching env with camera images, for tests, examples and docs.

It follows the ``fastvla.envs`` contract (``pixels`` observation, ``info["task"]``, ``info["is_success"]``,
``expert_action()``) in milliseconds per episode, and can also imitate a third-party env with other key
names (flat ``cam_high`` image, ``qpos`` state, no instruction in ``info``). Nothing is registered on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


class ToyReachEnv(gym.Env):
    """Move a point to a coloured target in the unit square.

    Description:
        A point starts at a random position; the target (one of three colours, named in the instruction)
        is placed at random. The episode terminates when the point is within ``tolerance`` of the target.

    Action Space:
        ``Box(-1, 1, (2,))``: velocity command, scaled by ``speed`` per step.

    Observation Space:
        ``{image_key: {cam: uint8 (S, S, 3)}, state_key: float32 (4,)}`` (point and target positions), or
        with ``flat_images=True`` ``{cam: uint8 (S, S, 3), ..., state_key: ...}``.

    Rewards:
        Minus the distance to the target.

    Episode End:
        Termination on success; truncation after ``max_episode_steps``.

    Arguments:
        image_size: Side of the square camera images.
        cameras: Camera names; ``"wrist"`` is a zoomed view centred on the point, others the whole square.
        image_key: Key of the camera dict (ignored with ``flat_images``).
        state_key: Key of the state vector.
        flat_images: Put cameras at the top level of the observation instead of under ``image_key``.
        with_task: Put the instruction in ``info["task"]`` (a third-party env usually has none).
        speed: Distance moved per step at full action.
        tolerance: Success distance.
        max_episode_steps: Truncation horizon.
        render_mode: ``None`` or ``"rgb_array"`` (the ``front`` view).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        image_size: int = 32,
        cameras: Sequence[str] = ("front", "wrist"),
        image_key: str = "pixels",
        state_key: str = "agent_pos",
        flat_images: bool = False,
        with_task: bool = True,
        speed: float = 0.1,
        tolerance: float = 0.08,
        max_episode_steps: int = 30,
        render_mode: str | None = None,
    ) -> None:
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.image_key, self.state_key, self.flat_images = image_key, state_key, flat_images
        self.with_task = with_task
        self.speed, self.tolerance, self.max_episode_steps = speed, tolerance, max_episode_steps
        self.render_mode = render_mode
        img = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        cams = {c: img for c in self.cameras}
        state = spaces.Box(-1.0, 1.0, (4,), np.float32)
        obs = {**cams, state_key: state} if flat_images else {image_key: spaces.Dict(cams), state_key: state}
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.color = "red"
        self.steps = 0

    @property
    def task_description(self) -> str:
        """The instruction of the current episode."""
        return f"reach the {self.color} target"

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Random start, target and colour, from ``self.np_random`` only."""
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.9, 0.9, 2)
        self.goal = self.np_random.uniform(-0.9, 0.9, 2)
        self.color = list(COLORS)[int(self.np_random.integers(len(COLORS)))]
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Move, then report distance reward, success and time-limit truncation."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.speed * action, -1.0, 1.0)
        self.steps += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < self.tolerance
        return self._obs(), -dist, success, self.steps >= self.max_episode_steps, self._info()

    def expert_action(self) -> np.ndarray:
        """Head straight for the target (privileged state)."""
        return np.clip((self.goal - self.pos) / self.speed, -1.0, 1.0).astype(np.float32)

    def render(self) -> np.ndarray | None:
        """The whole-square (``front``) view in ``rgb_array`` mode."""
        return self._image("front") if self.render_mode == "rgb_array" else None

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"is_success": bool(np.linalg.norm(self.pos - self.goal) < self.tolerance)}
        if self.with_task:
            info["task"] = self.task_description
        return info

    def _pixel(self, xy: np.ndarray, centre: np.ndarray, zoom: float) -> tuple[int, int]:
        s = self.image_size
        col, row = ((xy - centre) * zoom + 1.0) / 2.0 * (s - 1)
        return round(float(row)), round(float(col))

    def _image(self, camera: str) -> np.ndarray:
        s = self.image_size
        img = np.full((s, s, 3), 90, dtype=np.uint8)
        centre, zoom = (self.pos, 2.0) if camera == "wrist" else (np.zeros(2), 1.0)
        r = max(1, s // 16)
        for xy, rgb in ((self.goal, COLORS[self.color]), (self.pos, (255, 255, 255))):
            y, x = self._pixel(xy, centre, zoom)
            img[max(0, y - r) : max(0, y + r + 1), max(0, x - r) : max(0, x + r + 1)] = rgb
        return img

    def _obs(self) -> dict[str, Any]:
        state = np.concatenate([self.pos, self.goal]).astype(np.float32)
        images = {c: self._image(c) for c in self.cameras}
        if self.flat_images:
            return {**images, self.state_key: state}
        return {self.image_key: images, self.state_key: state}
