"""Configs of closed-loop evaluation: :class:`EvalConfig` (how :func:`~fastvla.eval.evaluate` rolls out and
reports) and :class:`EvalPipelineConfig` (the ``fastvla eval`` command: which policy, which envs, plus an
:class:`EvalConfig`), after lerobot's ``configs/default.py`` ``EvalConfig`` and ``configs/eval.py``
``EvalPipelineConfig``.

The command's flags are generated from these fields (:mod:`fastvla.utils.flags`); the rollout fields are
flattened (``--batch-size``, not ``--eval.batch-size``), and a ``--config`` file nests them under ``eval:``.

Example:
    >>> cfg = EvalConfig(n_episodes=20, batch_size=4, out_dir="outputs/eval")
    >>> EvalPipelineConfig(policy="scripted", env=("fastvla/PickCube-v0",), eval=cfg).eval.batch_size
    4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fastvla.policies.observation_map import ObservationMap, check_instruction_source, check_success_source
from fastvla.utils.config import ConfigMixin, check, config_field, nested_from_dicts


@dataclass
class EvalConfig(ConfigMixin):
    """How episodes are rolled out, seeded, recorded and reported (the options of ``evaluate``)."""

    n_episodes: int = config_field(50, "Episodes per env.", aliases=("--episodes",))
    batch_size: int = config_field(1, "Envs stepped in parallel (one vector env of this size).")
    seed: int = config_field(0, "Seed of episode 0; episode i is reset with seed + i, whatever the batch.")
    max_steps: int | None = config_field(None, "Step cap per episode; None = the env's max_episode_steps.")
    max_videos: int = config_field(10, "Videos written per env at most (the first episodes); 0 = none.")
    out_dir: str | None = config_field(
        None, "Folder for eval_info.json, report.md and videos/; None writes nothing.", aliases=("--out",)
    )
    video_dir: str | None = config_field(None, "Folder for videos; None = <out-dir>/videos.")
    env_kwargs: dict[str, Any] | None = config_field(
        None, "Keyword arguments for gym.make of env ids, as JSON, e.g. '{\"image_size\": 96}'."
    )
    video_obs_paths: tuple[str, ...] = config_field(
        (),
        "Observation paths of the images shown in videos (pixels/front, cam_high); empty = the policy's "
        "observation-map cameras, else every (H, W, 3) uint8 image, else env.render().",
        aliases=("--camera-keys",),  # the former name
    )
    task: str | None = config_field(
        None,
        "Instruction of every episode: a fixed text, or where to read it, 'info:KEY' or 'obs:PATH'; None = "
        "the observation map's, else info['task'].",
    )
    success: str | None = config_field(
        None,
        "Where success is read: 'info:KEY' (e.g. info:success) or 'terminated'; None = the observation "
        "map's, else info:is_success.",
    )
    expert: str | None = config_field(
        None,
        "The 'scripted' baseline's expert for envs without expert_action(): 'module:function', called as "
        "function(env, obs, info) -> action (as for fastvla record --expert).",
    )
    vectorization: Literal["auto", "async", "sync"] = config_field(
        "auto", "Vector env kind; auto = async workers (forkserver) when the batch size is > 1, else sync."
    )
    fps: int | None = config_field(None, "Frame rate of the videos; None = the env's render_fps, else 30.")
    progress: bool = config_field(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        self.video_obs_paths = tuple(self.video_obs_paths or ())
        for name in ("out_dir", "video_dir"):  # Path objects from Python callers; str keeps it serialisable
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if self.env_kwargs is not None:
            self.env_kwargs = dict(self.env_kwargs)
        check(self.n_episodes >= 1, f"n_episodes={self.n_episodes} (--episodes); must be >= 1")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} (--batch-size); must be >= 1")
        check(self.max_videos >= 0, f"max_videos={self.max_videos}; must be >= 0")
        check(
            self.max_steps is None or self.max_steps >= 1,
            f"max_steps={self.max_steps}; must be >= 1 (or None for the env's time limit)",
        )
        check(self.fps is None or self.fps >= 1, f"fps={self.fps}; must be >= 1 (or None)")
        check(
            self.expert is None or ":" in self.expert,
            f"expert={self.expert!r} (--expert); must be 'module:function', e.g. 'my_env:expert'",
        )
        check_instruction_source(self.task)
        if self.success is not None:
            check_success_source(self.success)


@dataclass
class EvalPipelineConfig(ConfigMixin):
    """``fastvla eval``: a policy, the envs to evaluate it in, and how (:class:`EvalConfig`)."""

    policy: str = config_field(
        help="Checkpoint path or Hub id, 'scripted' (the env's expert), 'random', or ws://host:port."
    )
    env: tuple[str, ...] = config_field(
        help="Gymnasium env id(s), e.g. fastvla/PickCube-v0; several give a per-env breakdown."
    )
    eval: EvalConfig = field(
        default_factory=EvalConfig, metadata={"help": "Rollouts and reports", "flatten": True}
    )
    load_in_4bit: bool = config_field(False, "Load a FastVLA checkpoint with NF4 weights.")
    device: str | None = config_field(None, "Torch device of a checkpoint; None = cuda if available.")
    obs_map: dict[str, Any] | None = config_field(
        None,
        "Observation map of the env, as JSON for ObservationMap (cameras, state, instruction, success, "
        'depth), e.g. \'{"cameras": {"front": "sensors/rgb_top"}, "state": "proprio", "instruction": '
        '"info:goal_text", "success": "info:solved"}\'; None = the checkpoint\'s (FastVLA env keys).',
    )
    n_action_steps: int | None = config_field(
        None, "Actions executed per predicted chunk (checkpoint); None = the checkpoint's setting."
    )

    def __post_init__(self) -> None:
        nested_from_dicts(self)
        if isinstance(self.env, str):
            self.env = (self.env,)
        self.env = tuple(self.env)
        check(len(self.env) > 0, "env is empty; pass at least one Gymnasium id, e.g. fastvla/PickCube-v0")
        if self.obs_map is not None:
            self.observation_map()  # validates it now, before a checkpoint loads

    def policy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~fastvla.policies.load_policy` for this run."""
        kwargs: dict[str, Any] = {"load_in_4bit": self.load_in_4bit, "device": self.device}
        if self.obs_map is not None:
            kwargs["obs_map"] = self.observation_map()
        if self.n_action_steps is not None:
            kwargs["n_action_steps"] = self.n_action_steps
        return kwargs

    def observation_map(self) -> ObservationMap | None:
        """``obs_map`` as an :class:`~fastvla.policies.ObservationMap` (None when not given)."""
        return None if self.obs_map is None else ObservationMap.from_dict(self.obs_map)
