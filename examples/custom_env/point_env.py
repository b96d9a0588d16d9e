"""A small Gymnasium env whose keys are nothing like FastVLA's, and a scripted expert for it.

It shows how FastVLA takes *your* env as it is (see docs/custom_envs.md): the camera image is nested at
``obs["sensors"]["rgb_top"]``, the proprioceptive state is ``obs["proprio"]``, the instruction is
``info["goal_text"]`` and success is ``info["solved"]``. One observation map names them::

    {"cameras": {"top": "sensors/rgb_top"}, "state": "proprio",
     "instruction": "info:goal_text", "success": "info:solved"}

Pure numpy (no MuJoCo, no GL): the env draws its own pictures. Nothing is registered on import; FastVLA
builds it from the entry point ``point_env:PointEnv`` (``module:Class``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 190, 70),
    "blue": (60, 90, 230),
}


class PointEnv(gym.Env):
    """Drive a white dot to the coloured square the instruction names, past a square of another colour.

    Description:
        A dot starts at a random place in the unit square ``[-1, 1]^2``; two squares of different colours
        are placed at random, and the instruction names one ("go to the red square"). Only the image shows
        where the squares are, so a policy must ground the colour in the picture.

    Action Space:
        ``Box(-1, 1, (2,), float32)``: a velocity command, ``speed`` per step at full action.

    Observation Space:
        ``{"sensors": {"rgb_top": uint8 (S, S, 3)}, "proprio": float32 (4,)}``: a top-down picture and the
        dot's position and last velocity.

    Rewards:
        Minus the distance to the named square.

    Starting State:
        Dot and squares uniform in the square, the squares at least ``3 * tolerance`` apart.

    Episode End:
        Terminates when the dot is within ``tolerance`` of the named square (``info["solved"]``); truncates
        after ``max_steps`` steps (the env keeps its own time limit, so it needs no registration).

    Arguments:
        image_size: side of the square camera image ``S``.
        speed: distance moved per step at full action.
        tolerance: success distance.
        max_steps: truncation horizon.
        render_mode: ``None`` or ``"rgb_array"`` (the top camera).

    Version History:
        v0: first version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        image_size: int = 64,
        speed: float = 0.1,
        tolerance: float = 0.12,
        max_steps: int = 40,
        render_mode: str | None = None,
    ) -> None:
        self.image_size, self.speed, self.tolerance = int(image_size), float(speed), float(tolerance)
        self.max_steps, self.render_mode = int(max_steps), render_mode
        image = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(
            {
                "sensors": spaces.Dict({"rgb_top": image}),
                "proprio": spaces.Box(-1.0, 1.0, (4,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos, self.vel = np.zeros(2), np.zeros(2)
        self.squares: dict[str, np.ndarray] = {}
        self.target = "red"
        self.steps = 0

    @property
    def goal(self) -> np.ndarray:
        """Centre of the named square."""
        return self.squares[self.target]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Random dot, two squares of two random colours, and which one to reach (``self.np_random`` only)."""
        super().reset(seed=seed)
        names = self.np_random.choice(list(COLORS), size=2, replace=False)
        first = self.np_random.uniform(-0.8, 0.8, 2)
        second = first
        while np.linalg.norm(second - first) < 3 * self.tolerance:
            second = self.np_random.uniform(-0.8, 0.8, 2)
        self.squares = {str(names[0]): first, str(names[1]): second}
        self.target = str(names[0])
        self.pos, self.vel = self.np_random.uniform(-0.9, 0.9, 2), np.zeros(2)
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Move, then report the distance reward, success and the time limit."""
        self.vel = self.speed * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.vel, -1.0, 1.0)
        self.steps += 1
        info = self._info()
        distance = float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), -distance, info["solved"], self.steps >= self.max_steps, info

    def render(self) -> np.ndarray | None:
        """The top camera's picture in ``rgb_array`` mode."""
        return self._picture() if self.render_mode == "rgb_array" else None

    def _info(self) -> dict[str, Any]:
        solved = bool(np.linalg.norm(self.pos - self.goal) < self.tolerance)
        return {"goal_text": f"go to the {self.target} square", "solved": solved}

    def _pixel(self, xy: np.ndarray) -> tuple[int, int]:
        col, row = (np.asarray(xy) + 1.0) / 2.0 * (self.image_size - 1)
        return round(float(row)), round(float(col))

    def _picture(self) -> np.ndarray:
        s = self.image_size
        img = np.full((s, s, 3), 70, dtype=np.uint8)
        half = max(1, round(self.tolerance / 2 * (s - 1) / 2))
        dot = max(1, s // 32)
        marks = [(xy, COLORS[name], half) for name, xy in self.squares.items()]
        for xy, rgb, r in [*marks, (self.pos, (255, 255, 255), dot)]:
            y, x = self._pixel(xy)
            img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = rgb
        return img

    def _obs(self) -> dict[str, Any]:
        proprio = np.concatenate([self.pos, self.vel]).astype(np.float32)
        return {"sensors": {"rgb_top": self._picture()}, "proprio": proprio}


def expert(env: gym.Env, obs: dict, info: dict) -> np.ndarray:
    """Scripted expert for ``fastvla record --expert point_env:expert``: head straight for the goal.

    Args:
        env: the env (``env.unwrapped`` is the :class:`PointEnv`, whose goal the expert may read).
        obs: the latest observation of that env.
        info: the latest info of that env.

    Returns:
        The action, ``(2,)`` float32.
    """
    point = env.unwrapped
    position = np.asarray(obs["proprio"][:2], dtype=np.float64)
    return np.clip((point.goal - position) / point.speed, -1.0, 1.0).astype(np.float32)
