"""Configs of the dataset commands: :class:`RecordConfig` for ``fastvla record``.

The command's flags are generated from these fields (:mod:`fastvla.utils.flags`), so ``--config FILE``,
``--print-config`` and ``--save-config FILE`` work as for ``fastvla train``.

Example:
    >>> cfg = RecordConfig(env=("fastvla/PickCube-v0",), episodes=10, out="data/pick", cameras=("front",))
    >>> cfg.env_kwargs_dict(), cfg.codec
    ({}, 'h264')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from fastvla.utils.config import ConfigMixin, check, config_field


@dataclass
class RecordConfig(ConfigMixin):
    """``fastvla record``: scripted-expert demonstrations of one or more envs into one LeRobot dataset."""

    env: tuple[str, ...] = config_field(
        help="Gymnasium id(s), e.g. fastvla/PickCube-v0 (several: one multi-task dataset)."
    )
    episodes: int = config_field(help="Episodes to save per env.", aliases=("--episodes-per-env",))
    out: str = config_field(help="Dataset folder (created, or appended to).")
    cameras: tuple[str, ...] = config_field(
        ("front", "wrist"), "Cameras to record, by name (front wrist, or front,wrist)."
    )
    image_size: int = config_field(128, "Rendered resolution in pixels (square).")
    num_envs: int = config_field(2, "Parallel env processes.")
    keep_failed: bool = config_field(False, "Also save episodes the expert failed.")
    codec: Literal["h264", "av1"] = config_field("h264", "Video codec.")
    seed: int | None = config_field(
        None, "Seed of the first resets; None = continue after earlier recordings into --out (0 if new)."
    )
    control_mode: Literal["ee_delta", "joint_pos"] = config_field("ee_delta", "Action space of the env.")
    expert_noise: float = config_field(0.0, "Noise on the expert's actions.")
    max_attempts: int | None = config_field(None, "Give up after this many episodes; None = no limit.")
    depth: bool = config_field(
        False, "Also record each camera's depth map (observation.depth.<cam>, uint16 millimetres)."
    )
    env_kwargs: str = config_field(
        "{}", "JSON object of env constructor arguments, e.g. '{\"num_distractors\": 1}'."
    )

    def __post_init__(self) -> None:
        if isinstance(self.env, str):
            self.env = (self.env,)
        self.env = tuple(self.env)
        if isinstance(self.cameras, str):
            self.cameras = tuple(c.strip() for c in self.cameras.split(",") if c.strip())
        self.cameras = tuple(self.cameras)
        check(len(self.env) > 0, "env is empty; pass at least one Gymnasium id, e.g. fastvla/PickCube-v0")
        check(self.episodes >= 1, f"episodes={self.episodes} (--episodes); must be >= 1")
        check(self.num_envs >= 1, f"num_envs={self.num_envs} (--num-envs); must be >= 1")
        check(len(self.cameras) > 0, "cameras is empty; pass at least one, e.g. --cameras front,wrist")
        self.env_kwargs_dict()  # validates the JSON now, not after the workers started

    def env_kwargs_dict(self) -> dict[str, Any]:
        """``env_kwargs`` parsed (a JSON object)."""
        try:
            value = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"--env-kwargs is not valid JSON ({err}): {self.env_kwargs!r}") from err
        if not isinstance(value, dict):
            raise ValueError(f"--env-kwargs must be a JSON object, got {self.env_kwargs!r}")
        return value
