"""Closed-loop evaluation: vectorised, seeded rollouts of a policy in Gymnasium envs.

Seeding contract: episode *i* of a run with seed *s* is reset with seed ``s + i`` whatever the batch size
or the number of workers. Episodes run in lock-step batches of ``batch_size``: the vector env is reset
with the batch's seeds, every row steps until its episode ends, finished rows are masked (their
auto-resets are ignored, never counted as new episodes), and the next batch starts when all rows are
done. Which episodes are counted therefore never depends on how fast they finish (the bias of
lerobot#2850), and a policy that acts on each row independently gives identical per-episode outcomes for
any batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.eval.config import EvalConfig
from fastvla.eval.metrics import EpisodeRecord, aggregate, wilson_interval
from fastvla.eval.vector import env_groups, is_vector_env, make_vector_env
from fastvla.eval.video import VideoWriter, get_path, image_paths_of_space
from fastvla.policies.loading import load_policy
from fastvla.policies.observation_map import (
    DEFAULT_SUCCESS,
    ObservationMap,
    read_instructions,
    read_successes,
)

logger = logging.getLogger(__name__)

EnvLike = str | Callable[[], Any]


def _relative(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when it lies inside it, else as given."""
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "env"


def _to_actions(actions: Any, batch: int, space: Any) -> np.ndarray:
    """Policy output as a ``(B, *action_shape)`` array of the action space's dtype."""
    if hasattr(actions, "detach"):  # torch tensor
        actions = actions.detach().float().cpu().numpy()
    actions = np.asarray(actions)
    shape = tuple(space.shape or ())
    if batch == 1 and actions.shape == shape:
        actions = actions[None]
    if actions.shape != (batch, *shape):
        raise ValueError(
            f"policy returned actions of shape {actions.shape}; expected {(batch, *shape)} "
            "(one action per vector-env row, in the env's action space)"
        )
    return actions.astype(space.dtype, copy=False)


@dataclass
class _VideoSpec:
    writer: VideoWriter
    root: Path
    max_videos: int
    video_obs_paths: list[str] | None
    out_dir: Path | None
    fps: int | None = None
    written: dict[str, int] = field(default_factory=dict)


class _Frames:
    """Collects camera images of the rows that get a video (from observations, or ``render()``)."""

    def __init__(self, vec_env: Any, video_obs_paths: list[str] | None) -> None:
        self.vec_env = vec_env
        self.keys = (
            video_obs_paths
            if video_obs_paths is not None
            else image_paths_of_space(vec_env.single_observation_space)
        )
        self.use_render = not self.keys
        self.enabled = True

    def grab(self, obs: Any, rows: Sequence[int]) -> dict[int, list[np.ndarray]]:
        if not rows or not self.enabled:
            return {}
        if not self.use_render:
            arrays = [get_path(obs, k) for k in self.keys]  # each (B, H, W, 3)
            return {r: [np.array(a[r], dtype=np.uint8) for a in arrays] for r in rows}
        rendered = self.vec_env.call("render")
        if rendered is None or any(f is None for f in rendered):
            logger.warning(
                "no RGB images in the observation and env.render() returned None; no videos. "
                "Pass video_obs_paths=[...] or create the env with render_mode='rgb_array'."
            )
            self.enabled = False
            return {}
        return {r: [np.asarray(rendered[r], dtype=np.uint8)] for r in rows}


def _episode_max_steps(vec_env: Any, max_steps: int | None) -> int:
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps={max_steps}; must be >= 1 (or None for the env's time limit)")
        return int(max_steps)
    try:
        spec = vec_env.get_attr("spec")[0]
    except Exception:
        spec = None
    limit = getattr(spec, "max_episode_steps", None)
    if limit is None:
        logger.info("env has no max_episode_steps; capping episodes at 1000 steps (set max_steps)")
        return 1000
    return int(limit)


def _eval_config(config: EvalConfig | int | None, options: dict[str, Any]) -> EvalConfig:
    """The :class:`EvalConfig` of an :func:`evaluate` call: ``config`` overridden by keyword options."""
    if isinstance(config, int) and not isinstance(config, bool):  # evaluate(policy, env, 20): n_episodes
        if "n_episodes" in options:
            raise TypeError("evaluate() got n_episodes twice (as the third argument and as a keyword)")
        config, options = None, {**options, "n_episodes": config}
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"evaluate() got unknown option(s) {unknown}; EvalConfig fields: {sorted(names)}")
    if config is None:
        return EvalConfig(**options)
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig (or an int: n_episodes), got {type(config).__name__}")
    return dataclasses.replace(config, **options) if options else config


def run_group(
    policy: Any,
    vec_env: Any,
    group: str,
    n_episodes: int,
    seed: int,
    max_steps: int | None = None,
    task: str | None = None,
    video: _VideoSpec | None = None,
    on_episode_end: Callable[[int], None] | None = None,
    timing: dict[str, float] | None = None,
    success: str | None = None,
    obs_map: ObservationMap | None = None,
) -> list[EpisodeRecord]:
    """Roll out ``n_episodes`` episodes of ``policy`` in ``vec_env`` in lock-step batches.

    Args:
        policy: Object with ``reset()`` and ``select_action(obs, task=None)``.
        vec_env: A Gymnasium vector env (its ``num_envs`` is the batch size).
        group: Name recorded with each episode (the env's id).
        n_episodes: Number of episodes; episode ``i`` is reset with seed ``seed + i``.
        seed: Seed of episode 0.
        max_steps: Step cap per episode (``None``: the env's ``max_episode_steps``).
        task: Where each episode's instruction comes from (read at reset): ``"info:KEY"``, ``"obs:PATH"``
            or a fixed instruction (see :mod:`fastvla.policies.observation_map`); ``None``: the observation
            map's, else ``info["task"]`` where the env gives it.
        video: Where and how many videos to write (``None``: no videos).
        on_episode_end: Called with the number of episodes that just finished (progress bars).
        timing: If given, ``policy_s``, ``env_s`` (seconds in ``select_action`` and ``vec_env.step``)
            and ``steps`` (vector steps) are added to it.
        success: Where success comes from: ``"info:KEY"`` or ``"terminated"``; ``None``: the observation
            map's, else ``"info:is_success"`` (an env without that key counts every episode as failed).
        obs_map: The env's :class:`~fastvla.policies.ObservationMap` (``None``: the policy's, if any); it
            supplies the instruction and success sources that ``task`` and ``success`` leave open.

    Returns:
        One :class:`EpisodeRecord` per episode, in episode order.
    """
    batch = vec_env.num_envs
    obs_map = obs_map if obs_map is not None else getattr(policy, "obs_map", None)
    if task is None:
        task = getattr(obs_map, "instruction", None)
    success = success or getattr(obs_map, "success", None) or DEFAULT_SUCCESS
    cap = _episode_max_steps(vec_env, max_steps)
    space = vec_env.single_action_space
    if hasattr(policy, "bind_env"):
        policy.bind_env(vec_env)
    if hasattr(policy, "check_action_space"):  # FastVLAPolicy: action size check, clipping to Box bounds
        policy.check_action_space(space)
    frames_src = _Frames(vec_env, video.video_obs_paths) if video is not None else None
    records: list[EpisodeRecord] = []
    for start in range(0, n_episodes, batch):
        n_real = min(batch, n_episodes - start)
        # Padding rows of a last, partial batch run seeds past the run's range and are never counted.
        seeds = [seed + start + r for r in range(batch)]
        obs, info = vec_env.reset(seed=seeds)
        policy.reset()
        if hasattr(policy, "seed_episodes"):
            policy.seed_episodes(seeds)
        tasks = read_instructions(task, obs, info, batch)
        policy_task = None if all(t is None for t in tasks) else [t or "" for t in tasks]

        done = np.zeros(batch, dtype=bool)
        done[n_real:] = True
        sum_r = np.zeros(batch)
        max_r = np.full(batch, -np.inf)
        length = np.zeros(batch, dtype=int)
        succeeded = np.zeros(batch, dtype=bool)
        terminated = np.zeros(batch, dtype=bool)
        video_rows: list[int] = []
        if video is not None and frames_src is not None:
            budget = video.max_videos - video.written.get(group, 0)
            video_rows = list(range(min(max(budget, 0), n_real)))
            video.written[group] = video.written.get(group, 0) + len(video_rows)
        frames: dict[int, list[list[np.ndarray]]] = {r: [] for r in video_rows}
        for r, imgs in frames_src.grab(obs, video_rows).items() if frames_src else ():
            frames[r].append(imgs)

        for _ in range(cap):
            t0 = time.perf_counter()
            actions = _to_actions(policy.select_action(obs, task=policy_task), batch, space)
            t1 = time.perf_counter()
            obs, reward, term, trunc, info = vec_env.step(actions)
            if timing is not None:
                timing["policy_s"] = timing.get("policy_s", 0.0) + t1 - t0
                timing["env_s"] = timing.get("env_s", 0.0) + time.perf_counter() - t1
                timing["steps"] = timing.get("steps", 0) + 1
            active = ~done
            reward = np.asarray(reward, dtype=float)
            sum_r[active] += reward[active]
            max_r[active] = np.maximum(max_r[active], reward[active])
            length[active] += 1
            succeeded[active] |= read_successes(success, info, term, batch)[active]
            rows = [r for r in video_rows if active[r]]
            for r, imgs in frames_src.grab(obs, rows).items() if frames_src else ():
                frames[r].append(imgs)
            ended = active & (np.asarray(term) | np.asarray(trunc))
            terminated |= active & np.asarray(term, dtype=bool)
            done |= ended
            if on_episode_end is not None and ended[:n_real].any():
                on_episode_end(int(ended[:n_real].sum()))
            if done.all():
                break
        if on_episode_end is not None and not done.all():  # rows stopped by the step cap
            on_episode_end(int((~done[:n_real]).sum()))

        for r in range(n_real):
            i = start + r
            rec = EpisodeRecord(
                episode_index=i,
                seed=seeds[r],
                success=bool(succeeded[r]),
                length=int(length[r]),
                sum_reward=float(sum_r[r]),
                max_reward=float(max_r[r]) if length[r] else 0.0,
                task=tasks[r] or "",
                group=group,
                terminated=bool(terminated[r]),
            )
            if video is not None and frames.get(r):
                path = video.root / _slug(group) / f"eval_episode_{i}.mp4"
                video.writer.submit(path, frames.pop(r), rec.task, rec.success, fps=video.fps)
                rec.video_path = _relative(path, video.out_dir)
            records.append(rec)
    return records


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        episodes: One record per episode (seed, success, length, return, task, video path).
        info: The contents of ``eval_info.json`` (LeRobot layout plus ``per_episode`` and ``meta``).
        out_dir: Folder the results were written to, if any.
    """

    episodes: list[EpisodeRecord]
    info: dict[str, Any]
    out_dir: Path | None = None

    @property
    def n_episodes(self) -> int:
        """Number of episodes evaluated."""
        return len(self.episodes)

    @property
    def n_success(self) -> int:
        """Number of successful episodes."""
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        """Fraction of successful episodes."""
        return self.n_success / self.n_episodes if self.episodes else float("nan")

    @property
    def success_ci95(self) -> tuple[float, float]:
        """Wilson 95 % interval of the success rate (fractions)."""
        return wilson_interval(self.n_success, self.n_episodes)

    @property
    def mean_return(self) -> float:
        """Mean sum of rewards per episode."""
        return float(np.mean([e.sum_reward for e in self.episodes])) if self.episodes else float("nan")

    @property
    def mean_length(self) -> float:
        """Mean episode length in steps."""
        return float(np.mean([e.length for e in self.episodes])) if self.episodes else float("nan")

    @property
    def eval_s(self) -> float:
        """Wall-clock seconds of the evaluation."""
        return float(self.info["overall"]["eval_s"])

    def summary(self) -> str:
        """Markdown table of the success rate (Wilson 95 % CI), return and length, per task and overall."""
        from fastvla.eval.report import markdown_table, summary_rows

        return markdown_table(summary_rows(self.info))

    @property
    def video_paths(self) -> list[str]:
        """Paths of the episode videos written (relative to ``out_dir`` when it is set)."""
        return list(self.info["overall"]["video_paths"])


def evaluate(
    policy: Any,
    env: EnvLike | Sequence[EnvLike] | Mapping[str, EnvLike],
    config: EvalConfig | int | None = None,
    *,
    policy_kwargs: Mapping[str, Any] | None = None,
    policy_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    obs_map: ObservationMap | Mapping[str, Any] | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate a policy in closed loop and report success rate, returns, lengths and videos.

    Episode ``i`` (per env) is reset with seed ``seed + i`` whatever ``batch_size``; the same call gives
    the same per-episode outcomes. With ``out_dir`` it writes ``eval_info.json`` (LeRobot's layout plus
    per-episode records and the versions/config/git revision), ``report.md`` with a success-rate plot,
    ``videos/<env>/eval_episode_<i>.mp4`` and a ``videos/summary.gif`` grid.

    Args:
        policy: An object with ``reset()`` and ``select_action(obs, task=None) -> (B, A)``, or a spec for
            :func:`~fastvla.policies.load_policy` (``"scripted"``, ``"random"``, ``"ws://..."``, a path).
        env: A Gymnasium id (``"fastvla/PickCube-v0"``), a zero-argument factory returning an env, an
            open ``gymnasium.vector.VectorEnv`` (reused as is and left open, e.g. for periodic evaluation
            during training; its ``num_envs`` is the batch size), or a list / ``{name: env}`` dict of them
            for a per-env breakdown.
        config: An :class:`~fastvla.eval.EvalConfig` (episodes, batch size, seed, videos, output folder,
            ...; see its fields). An int is taken as ``n_episodes``.
        policy_kwargs: Passed to :func:`~fastvla.policies.load_policy` when ``policy`` is a spec.
        policy_name: Name of the policy in the results (default: the spec string or the class name).
        metadata: Extra entries for the ``meta.config`` block of ``eval_info.json``.
        obs_map: The env's :class:`~fastvla.policies.ObservationMap` (or its dict form), for policies that
            have none (baselines, remote policies): where the instruction and success come from and which
            cameras the videos show. ``None``: the policy's ``obs_map``, if any. ``task`` and ``success``
            options override its sources.
        **options: :class:`~fastvla.eval.EvalConfig` fields given as keywords (``n_episodes=20``,
            ``batch_size=4``, ``out_dir=...``); they override ``config``'s.

    Returns:
        An :class:`EvalResult`.

    Example:
        >>> from fastvla.eval import EvalConfig, evaluate
        >>> from fastvla.eval.toy import ToyReachEnv
        >>> result = evaluate("scripted", ToyReachEnv, EvalConfig(n_episodes=4, batch_size=2, progress=False))
        >>> result.success_rate, [e.seed for e in result.episodes]
        (1.0, [0, 1, 2, 3])
        >>> result = evaluate(
        ...     "scripted", "fastvla/PickCube-v0", n_episodes=20, batch_size=4, out_dir="outputs/eval"
        ... )  # doctest: +SKIP
        >>> print(f"{result.success_rate:.0%}, 95% CI {result.success_ci95}")  # doctest: +SKIP
    """
    cfg = _eval_config(config, options)
    n_episodes, batch_size, seed, max_steps = cfg.n_episodes, cfg.batch_size, cfg.seed, cfg.max_steps
    max_videos, task, fps = cfg.max_videos, cfg.task, cfg.fps
    env_kwargs, video_obs_paths, video_dir = cfg.env_kwargs, list(cfg.video_obs_paths) or None, cfg.video_dir
    from fastvla.eval.report import build_eval_info, write_outputs

    policy_spec = policy_name or (policy if isinstance(policy, str) else type(policy).__name__)
    policy = load_policy(policy, **dict(policy_kwargs or {}))
    groups = env_groups(env, env_kwargs, cfg.expert)
    if isinstance(obs_map, Mapping):
        obs_map = ObservationMap.from_dict(obs_map)
    obs_map = obs_map if obs_map is not None else getattr(policy, "obs_map", None)
    if video_obs_paths is None and getattr(obs_map, "cameras", None):
        video_obs_paths = list(obs_map.cameras.values())  # videos show what the policy sees
    out_path = Path(cfg.out_dir) if cfg.out_dir is not None else None
    if video_dir is None and out_path is not None:
        video_dir = out_path / "videos"
    writer = VideoWriter(fps=fps or 30) if video_dir is not None and max_videos > 0 else None
    video = (
        _VideoSpec(
            writer, Path(video_dir), max_videos, list(video_obs_paths) if video_obs_paths else None, out_path
        )
        if writer is not None
        else None
    )
    num_envs = min(batch_size, n_episodes)

    import gymnasium as gym
    from tqdm.auto import tqdm

    start_t = time.perf_counter()
    timing: dict[str, float] = {}
    records: list[EpisodeRecord] = []
    used: set[str] = set()
    sizes: set[int] = set()
    with tqdm(total=n_episodes * len(groups), desc="eval", unit="ep", disable=not cfg.progress) as bar:
        try:
            for name, factory in groups.items():
                owned = not is_vector_env(factory)
                if owned:
                    vec_env, kind = make_vector_env(factory, num_envs, cfg.vectorization)
                else:  # the caller's vector env: its size is the batch size, and it stays open
                    vec_env = factory
                    kind = "async" if isinstance(vec_env, gym.vector.AsyncVectorEnv) else "sync"
                used.add(kind)
                sizes.add(vec_env.num_envs)
                try:
                    if video is not None:
                        video.fps = fps or int(vec_env.metadata.get("render_fps") or 30)
                    bar.set_postfix_str(name)
                    records += run_group(
                        policy, vec_env, name, n_episodes, seed, max_steps, task, video, bar.update, timing,
                        success=cfg.success, obs_map=obs_map,
                    )  # fmt: skip
                finally:
                    if owned:
                        vec_env.close()
        finally:
            if writer is not None:
                writer.close()
    eval_s = time.perf_counter() - start_t
    grid = writer.write_grid(Path(video_dir) / "summary.gif") if writer is not None else None

    config = {
        "policy": policy_spec,
        "env": list(groups),
        "env_kwargs": dict(env_kwargs or {}),
        "expert": cfg.expert,
        "n_episodes": n_episodes,
        "batch_size": sizes.pop() if len(sizes) == 1 else sorted(sizes),  # envs stepped together
        "seed": seed,
        "max_steps": max_steps,
        "max_videos": max_videos if writer is not None else 0,
        "video_obs_paths": list(video_obs_paths) if video_obs_paths else None,
        "task": task,
        "success": cfg.success or getattr(obs_map, "success", None) or DEFAULT_SUCCESS,
        "obs_map": obs_map.to_dict() if isinstance(obs_map, ObservationMap) else None,
        "vectorization": sorted(used),
        **dict(metadata or {}),
    }
    metrics = aggregate(records, eval_s)
    steps = max(1, int(timing.get("steps", 0)))
    metrics["overall"]["policy_ms_per_step"] = 1000 * timing.get("policy_s", 0.0) / steps
    metrics["overall"]["env_ms_per_step"] = 1000 * timing.get("env_s", 0.0) / steps
    info = build_eval_info(metrics, config)
    if grid is not None:
        info["summary_video"] = _relative(grid, out_path)
    result = EvalResult(records, info, out_path)
    if out_path is not None:
        write_outputs(result, out_path)
    return result
