"""Recording scripted-expert demonstrations from FastVLA envs into a LeRobot v3.0 dataset.

Several envs run in parallel (a Gymnasium vector env; worker processes start with ``forkserver`` since GL
contexts don't survive ``fork``). Each step the expert's action comes from ``vec_env.call("expert_action")``
and the instruction from ``info["task"]``. Frames are ``observation.images.<cam>`` = ``pixels[cam]``,
``observation.state`` = ``agent_pos`` and ``action`` = the expert's action. A finished episode is written
only when it succeeded (unless ``keep_failed``), so a dataset of N episodes holds N demonstrations.

:func:`record_suite` records several envs into one dataset, the same number of episodes each (a multi-task
dataset: ``task`` per episode is that env's instruction). Seeds continue across appends: each run reserves
a block of seeds in ``meta/fastvla_recording.json``, so re-running the same command adds new episodes
instead of repeating the old ones.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fastvla.constants import (
    ACTION,
    DEPTH_UNITS_PER_METRE,
    GYM_DEPTH,
    GYM_PIXELS,
    GYM_STATE,
    INFO_SUCCESS,
    INFO_TASK,
    OBS_STATE,
    depth_key,
    image_key,
)
from fastvla.datasets.writer import LeRobotDatasetWriter

EE_DELTA_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]
#: FastVLA's own recording state beside LeRobot's metadata (lerobot ignores unknown files in meta/).
RECORDING_STATE = Path("meta") / "fastvla_recording.json"
#: Seeds one recording run may use: env ``i`` of a run with first seed ``s`` is reset with ``s + i`` and then
#: auto-resets from its own generator, so runs whose seed blocks don't overlap record different episodes.
SEED_BLOCK = 1_000


def next_free_seed(out: str | os.PathLike) -> int:
    """First seed no earlier recording into ``out`` used: 0 for a new dataset.

    Raises:
        ValueError: ``meta/fastvla_recording.json`` is unreadable (names the file and the fix).
    """
    path = Path(out) / RECORDING_STATE
    if path.is_file():
        try:
            return int(json.loads(path.read_text())["next_seed"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is corrupt ({e}); delete it or pass an explicit --seed") from e
    # A dataset recorded before this file existed (or by another tool): start far from seed 0.
    return 10 * SEED_BLOCK if (Path(out) / "meta" / "info.json").is_file() else 0


def _reserve_seeds(out: str | os.PathLike, seed: int, num_envs: int, free: int) -> None:
    """Mark ``[seed, seed + block)`` used, ``free`` being :func:`next_free_seed` before this run (written
    before recording starts, so a killed run's seeds stay reserved)."""
    from fastvla.utils.io import atomic_write_text

    block = SEED_BLOCK * (1 + (num_envs - 1) // SEED_BLOCK)
    following = max(free, seed + block)
    atomic_write_text(Path(out) / RECORDING_STATE, json.dumps({"next_seed": following}))


@dataclass
class RecordSummary:
    """What a recording run produced."""

    out: Path
    requested: int = 0
    episodes_saved: int = 0
    episodes_attempted: int = 0
    successes: int = 0
    frames_saved: int = 0
    seconds: float = 0.0
    tasks: dict[str, int] = field(default_factory=dict)
    seed: int | None = None

    @property
    def success_rate(self) -> float:
        """Share of finished episodes in which the expert succeeded."""
        return self.successes / self.episodes_attempted if self.episodes_attempted else 0.0

    @property
    def complete(self) -> bool:
        """Whether as many episodes were saved as requested (False when ``max_attempts`` ran out)."""
        return self.episodes_saved >= self.requested


def _make_env(env_id: str, kwargs: Mapping[str, Any]) -> Any:
    import gymnasium as gym

    import fastvla.envs  # noqa: F401  (registers the ids inside worker processes)

    return gym.make(env_id, **kwargs)


def make_recording_env(env_id: str, num_envs: int, env_kwargs: Mapping[str, Any]) -> Any:
    """A vector env of ``num_envs`` copies (async with ``forkserver`` workers when more than one)."""
    import gymnasium as gym

    fns = [functools.partial(_make_env, env_id, dict(env_kwargs)) for _ in range(num_envs)]
    if num_envs == 1:
        return gym.vector.SyncVectorEnv(fns)
    return gym.vector.AsyncVectorEnv(fns, context="forkserver")


def features_from_spaces(
    vec_env: Any, cameras: Sequence[str], control_mode: str, depth: bool = False
) -> dict[str, dict]:
    """Dataset features matching a FastVLA env's observation and action spaces.

    With ``depth``, each camera also gets ``observation.depth.<cam>``: uint16 millimetres ``(H, W)``
    (see :func:`depth_to_millimetres`).
    """
    obs_space = vec_env.single_observation_space
    feats: dict[str, dict] = {}
    for cam in cameras:
        shape = obs_space[GYM_PIXELS][cam].shape
        feats[image_key(cam)] = {
            "dtype": "video",
            "shape": tuple(shape),
            "names": ["height", "width", "channels"],
        }
    if depth:
        if GYM_DEPTH not in obs_space.spaces:
            raise ValueError(
                f"depth=True but the env's observation has no {GYM_DEPTH!r} key (it has "
                f"{sorted(obs_space.spaces)}); build the env with depth=True"
            )
        for cam in cameras:
            height, width = obs_space[GYM_DEPTH][cam].shape[:2]
            names = ["height", "width"]
            feats[depth_key(cam)] = {"dtype": "uint16", "shape": (height, width), "names": names}
    state_dim = obs_space[GYM_STATE].shape[0]
    joints = [f"joint_{i}" for i in range(state_dim - 1)] + ["gripper"]
    feats[OBS_STATE] = {"dtype": "float32", "shape": (state_dim,), "names": joints}
    action_dim = vec_env.single_action_space.shape[0]
    if control_mode == "ee_delta" and action_dim == len(EE_DELTA_NAMES):
        names = EE_DELTA_NAMES
    else:
        names = [f"joint_{i}" for i in range(action_dim - 1)] + ["gripper"]
    feats[ACTION] = {"dtype": "float32", "shape": (action_dim,), "names": names}
    return feats


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (float) as stored in datasets: uint16 millimetres, clipped to 65.535 m; 0 stays
    "no reading" (as in ROS ``16UC1`` depth images)."""
    mm = np.round(np.nan_to_num(np.asarray(depth, np.float64), nan=0.0, posinf=0.0) * DEPTH_UNITS_PER_METRE)
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _frame(
    obs: Mapping[str, Any], i: int, cameras: Sequence[str], action: np.ndarray, depth: bool = False
) -> dict[str, Any]:
    frame = {image_key(c): np.asarray(obs[GYM_PIXELS][c][i]) for c in cameras}
    if depth:
        frame.update({depth_key(c): depth_to_millimetres(obs[GYM_DEPTH][c][i]) for c in cameras})
    frame[OBS_STATE] = np.asarray(obs[GYM_STATE][i], dtype=np.float32)
    frame[ACTION] = np.asarray(action, dtype=np.float32)
    return frame


def record(
    env_id: str,
    out: str | os.PathLike,
    episodes: int,
    cameras: Sequence[str] = ("front", "wrist"),
    image_size: int = 128,
    num_envs: int = 2,
    keep_failed: bool = False,
    codec: str = "h264",
    seed: int | None = None,
    control_mode: str = "ee_delta",
    expert_noise: float = 0.0,
    max_attempts: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    depth: bool = False,
) -> RecordSummary:
    """Record ``episodes`` expert demonstrations of ``env_id`` into the dataset at ``out``.

    Args:
        env_id: a registered Gymnasium id, e.g. ``"fastvla/PickCube-v0"``.
        out: dataset folder (created, or appended to when it holds a dataset with the same features).
        episodes: episodes to save.
        cameras: env cameras to record.
        image_size: rendered (and stored) resolution.
        num_envs: parallel envs (worker processes when > 1).
        keep_failed: also save episodes in which the expert failed.
        codec: video codec, "h264" (fast) or "av1".
        seed: seed of the first reset (env ``i`` gets ``seed + i``); ``None`` continues after the seeds of
            earlier recordings into ``out`` (0 for a new dataset), so appended episodes are new ones.
        control_mode: the env's control mode.
        expert_noise: noise the env adds to the expert's actions (diversity).
        max_attempts: stop after this many finished episodes (default ``5 * episodes + num_envs``).
        env_kwargs: further env constructor arguments.
        progress: show a progress bar.
        depth: also record each camera's depth map (the env is built with ``depth=True``) as
            ``observation.depth.<cam>``, uint16 millimetres.

    Returns:
        A :class:`RecordSummary`.

    Example:
        >>> record("fastvla/PickCube-v0", "data/pick", episodes=200, num_envs=2)  # doctest: +SKIP
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    kwargs = dict(env_kwargs or {})
    kwargs.update(cameras=tuple(cameras), image_size=image_size, control_mode=control_mode)
    kwargs.update(expert_noise=expert_noise)
    if depth:
        kwargs["depth"] = True
    max_attempts = max_attempts if max_attempts is not None else 5 * episodes + num_envs
    summary = RecordSummary(out=Path(out), requested=episodes)
    free = next_free_seed(out)
    seed = free if seed is None else seed
    start = time.perf_counter()
    vec_env = make_recording_env(env_id, num_envs, kwargs)
    try:
        fps = int(vec_env.metadata.get("render_fps") or 10)
        writer = LeRobotDatasetWriter(
            out,
            fps=fps,
            features=features_from_spaces(vec_env, cameras, control_mode, depth),
            robot_type="fastvla_sim",
            codec=codec,
        )
        bar = tqdm(total=episodes, desc=f"recording {env_id}", unit="episode", disable=not progress)
        _reserve_seeds(out, seed, num_envs, free)
        summary.seed = seed
        with writer, bar:  # on any exit the writer drops a partial episode and writes its metadata
            _rollouts(vec_env, writer, summary, bar, cameras, seed, keep_failed, max_attempts)
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        vec_env.close()


def _rollouts(
    vec_env: Any,
    writer: LeRobotDatasetWriter,
    summary: RecordSummary,
    bar: tqdm,
    cameras: Sequence[str],
    seed: int,
    keep_failed: bool,
    max_attempts: int,
) -> None:
    """Step all envs with the expert until enough episodes are saved (autoreset mode NEXT_STEP)."""
    num_envs, episodes = vec_env.num_envs, summary.requested
    obs, info = vec_env.reset(seed=[seed + i for i in range(num_envs)])
    buffers: list[list[dict[str, Any]]] = [[] for _ in range(num_envs)]
    tasks = [str(t) for t in info[INFO_TASK]]
    resetting = np.zeros(num_envs, dtype=bool)  # next step() resets these envs (autoreset NEXT_STEP)
    depth = depth_key(cameras[0]) in writer.features
    while summary.episodes_saved < episodes and summary.episodes_attempted < max_attempts:
        actions = np.stack([np.asarray(a, dtype=np.float32) for a in vec_env.call("expert_action")])
        for i in range(num_envs):
            if not resetting[i]:
                buffers[i].append(_frame(obs, i, cameras, actions[i], depth))
        obs, _, terminated, truncated, info = vec_env.step(actions)
        for i in range(num_envs):
            if resetting[i]:  # this step was the reset: a new episode starts with this observation
                resetting[i] = False
                tasks[i] = str(info[INFO_TASK][i])
                continue
            if not (terminated[i] or truncated[i]):
                continue
            resetting[i] = True
            success = bool(info[INFO_SUCCESS][i])
            summary.episodes_attempted += 1
            summary.successes += int(success)
            frames, buffers[i] = buffers[i], []
            if (success or keep_failed) and summary.episodes_saved < episodes:
                for frame in frames:
                    writer.add_frame(frame, task=tasks[i])
                writer.save_episode()
                summary.episodes_saved += 1
                summary.frames_saved += len(frames)
                summary.tasks[tasks[i]] = summary.tasks.get(tasks[i], 0) + 1
                bar.update(1)
            bar.set_postfix(success=f"{summary.success_rate:.0%}", attempts=summary.episodes_attempted)


def record_suite(
    env_ids: Sequence[str],
    out: str | os.PathLike,
    episodes_per_env: int,
    seed: int | None = None,
    **kwargs: Any,
) -> list[RecordSummary]:
    """Record ``episodes_per_env`` demonstrations of each env into one multi-task dataset at ``out``.

    The envs must share observation and action spaces (all FastVLA tabletop tasks do, for the same
    cameras, image size and control mode). Each env gets its own block of seeds.

    Args:
        env_ids: Gymnasium ids, e.g. ``fastvla.envs.ENV_IDS`` for the whole suite.
        out: dataset folder (created, or appended to).
        episodes_per_env: episodes saved per env (balanced tasks).
        seed: first seed of the first env (env ``k`` starts at ``seed + k * SEED_BLOCK``); ``None``
            continues after earlier recordings into ``out``.
        **kwargs: passed to :func:`record` (cameras, image_size, num_envs, expert_noise, env_kwargs, ...).

    Returns:
        One :class:`RecordSummary` per env, in order.

    Example:
        >>> from fastvla.envs import ENV_IDS
        >>> record_suite(ENV_IDS, "data/suite", episodes_per_env=100, num_envs=16)  # doctest: +SKIP
    """
    if len(set(env_ids)) != len(env_ids) or not env_ids:
        raise ValueError(f"env_ids must be distinct and non-empty, got {list(env_ids)}")
    summaries = []
    for k, env_id in enumerate(env_ids):
        env_seed = None if seed is None else seed + k * SEED_BLOCK
        summaries.append(record(env_id, out, episodes_per_env, seed=env_seed, **kwargs))
    return summaries
