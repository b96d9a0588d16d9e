"""Configs of the dataset commands: :class:`RecordConfig` for ``fastvla record``.

The command's flags are generated from these fields (:mod:`fastvla.utils.flags`), so ``--config FILE``,
``--print-config`` and ``--save-config FILE`` work as for ``fastvla train``.

Without ``obs_map`` the envs are FastVLA envs, built with ``cameras``, ``image_size``, ``control_mode``,
``expert_noise`` and ``depth``; with one, any Gymnasium env, built with ``env_kwargs`` only (those FastVLA
options must stay at their defaults; ``cameras`` picks among the map's).

Example:
    >>> cfg = RecordConfig(env=("fastvla/PickCube-v0",), episodes=10, out="data/pick", cameras=("front",))
    >>> cfg.env_kwargs_dict(), cfg.codec
    ({}, 'h264')
    >>> cfg = RecordConfig(env=("point_env:PointEnv",), episodes=10, out="data/point",
    ...                    obs_map={"cameras": {"top": "sensors/rgb_top"}, "state": "proprio"},
    ...                    expert="point_env:expert")
    >>> cfg.observation_map().success
    'info:is_success'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Literal

from fastvla.policies.observation_map import ObservationMap
from fastvla.utils.config import ConfigMixin, check, config_field


@dataclass
class RecordConfig(ConfigMixin):
    """``fastvla record``: scripted-expert demonstrations of one or more envs into one LeRobot dataset."""

    env: tuple[str, ...] = config_field(
        help="Gymnasium id(s), e.g. fastvla/PickCube-v0 (several: one multi-task dataset); with --obs-map "
        "also module:Class or module:EnvId (module importable, or a path/to/file.py)."
    )
    episodes: int = config_field(help="Episodes to save per env.", aliases=("--episodes-per-env",))
    out: str = config_field(help="Dataset folder (created, or appended to).")
    cameras: tuple[str, ...] = config_field(
        (),
        "Cameras to record, by name (front wrist, or front,wrist); empty = front,wrist of a FastVLA env, "
        "every camera of --obs-map.",
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
    obs_map: dict[str, Any] | None = config_field(
        None,
        "Observation map of any Gymnasium env, as JSON for ObservationMap: cameras, state, instruction "
        '(info:KEY, obs:PATH or a fixed text), success (info:KEY or terminated), depth; e.g. \'{"cameras": '
        '{"top": "sensors/rgb_top"}, "state": "proprio", "instruction": "info:goal_text", "success": '
        '"info:solved"}\'. None = a FastVLA env.',
    )
    expert: str | None = config_field(
        None,
        "The expert as module:function, called as function(env, obs, info) -> action (module importable, "
        "or a path/to/file.py); None = the env's own expert_action().",
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
        self.env_kwargs_dict()  # validates the JSON now, not after the workers started
        if self.obs_map is not None:
            self.observation_map()
            self._check_fastvla_options_unset()
        if self.expert is not None:
            check(":" in self.expert, f"expert={self.expert!r} (--expert); pass module:function")

    def _check_fastvla_options_unset(self) -> None:
        """With an observation map the env is built from ``env_kwargs`` alone: FastVLA options would be
        lost."""
        fastvla_only = ("image_size", "control_mode", "expert_noise", "depth")
        defaults = {f.name: f.default for f in fields(self)}
        changed = [n for n in fastvla_only if getattr(self, n) != defaults[n]]
        check(
            not changed,
            f"{['--' + n.replace('_', '-') for n in changed]} configure FastVLA envs; with --obs-map pass "
            "the env's own constructor arguments in --env-kwargs (and depth paths in the map's 'depth')",
        )

    def observation_map(self) -> ObservationMap | None:
        """``obs_map`` as an :class:`~fastvla.policies.ObservationMap` (None: FastVLA envs)."""
        return None if self.obs_map is None else ObservationMap.from_dict(self.obs_map)

    def env_kwargs_dict(self) -> dict[str, Any]:
        """``env_kwargs`` parsed (a JSON object)."""
        try:
            value = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"--env-kwargs is not valid JSON ({err}): {self.env_kwargs!r}") from err
        if not isinstance(value, dict):
            raise ValueError(f"--env-kwargs must be a JSON object, got {self.env_kwargs!r}")
        return value
