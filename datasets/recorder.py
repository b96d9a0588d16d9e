"""Recording scripted-expert demonstrations from Gymnasium envs into a LeRobot v3.0 dataset.

Several envs run in parallel (a Gymnasium vector env; worker processes start with ``forkserver`` since GL
contexts don't survive ``fork``). Each step the expert's action comes from ``vec_env.call("expert_action")``:
the env's own method (FastVLA's envs have one), or a user's ``expert(env, obs, info) -> action`` function
given as ``expert="module:function"`` (:class:`~fastvla.utils.entry_points.ExpertAction`).

Where the frames come from is an :class:`~fastvla.policies.ObservationMap`: ``observation.images.<cam>`` from
its camera paths, ``observation.state`` from its state path, ``action`` = the expert's action, the task
from its instruction source and success from its success source. Without one, the env is a FastVLA env
(``pixels/<cam>``, ``agent_pos``, ``info["task"]``, ``info["is_success"]``) built with the recorder's
camera, resolution and control-mode arguments; with one, any Gymnasium env (``env_id`` as for
:func:`~fastvla.utils.entry_points.make_env`), built with ``env_kwargs`` only, and the map is saved in
``meta/fastvla_recording.json`` so that a policy trained on the dataset knows it. A finished episode is
written only when it succeeded (unless ``keep_failed``), so a dataset of N episodes holds N demonstrations.

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
from collections.abc import Callable, Mapping, Sequence
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
    INFO_TASK,
    OBS_STATE,
    depth_key,
    image_key,
)
from fastvla.datasets.writer import LeRobotDatasetWriter
from fastvla.policies.baselines import expert_actions
from fastvla.policies.observation_map import INFO, ObservationMap, lookup, read_instructions

EE_DELTA_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]
#: FastVLA's own recording state beside LeRobot's metadata (lerobot ignores unknown files in meta/).
RECORDING_STATE = Path("meta") / "fastvla_recording.json"
#: Seeds one recording run may use: env ``i`` of a run with first seed ``s`` is reset with ``s + i`` and then
#: auto-resets from its own generator, so runs whose seed blocks don't overlap record different episodes.
SEED_BLOCK = 1_000
NO_EXPERT_FIX = "pass an expert, a function (env, obs, info) -> action: --expert module:function (expert=...)"


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


def recorded_obs_map(root: str | os.PathLike) -> dict[str, Any] | None:
    """The observation map a dataset was recorded with (``None``: a FastVLA env, or not recorded here)."""
    path = Path(root) / RECORDING_STATE
    try:
        value = json.loads(path.read_text()).get("obs_map") if path.is_file() else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def _reserve_seeds(
    out: str | os.PathLike, seed: int, num_envs: int, free: int, obs_map: ObservationMap | None = None
) -> None:
    """Mark ``[seed, seed + block)`` used, ``free`` being :func:`next_free_seed` before this run (written
    before recording starts, so a killed run's seeds stay reserved); keep the ``obs_map`` of any env."""
    from fastvla.utils.io import atomic_write_text

    block = SEED_BLOCK * (1 + (num_envs - 1) // SEED_BLOCK)
    state: dict[str, Any] = {"next_seed": max(free, seed + block)}
    previous = recorded_obs_map(out)
    if obs_map is not None or previous is not None:
        state["obs_map"] = obs_map.to_dict() if obs_map is not None else previous
    atomic_write_text(Path(out) / RECORDING_STATE, json.dumps(state))


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


def _make_env(env_id: str, kwargs: Mapping[str, Any], expert: str | Callable | None = None) -> Any:
    from fastvla.utils.entry_points import ExpertAction, make_env

    env = make_env(env_id, kwargs)  # imports fastvla.envs for fastvla/* ids, in worker processes too
    return env if expert is None else ExpertAction(env, expert)


def make_recording_env(
    env_id: str, num_envs: int, env_kwargs: Mapping[str, Any], expert: str | Callable | None = None
) -> Any:
    """A vector env of ``num_envs`` copies (async with ``forkserver`` workers when more than one).

    ``env_id`` is anything :func:`~fastvla.utils.entry_points.make_env` takes; ``expert`` (a
    ``"module:function"`` or a callable ``(env, obs, info) -> action``) becomes each env's
    ``expert_action()``.
    """
    import gymnasium as gym

    fns = [functools.partial(_make_env, env_id, dict(env_kwargs), expert) for _ in range(num_envs)]
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


def features_from_map(vec_env: Any, obs_map: ObservationMap) -> dict[str, dict]:
    """Dataset features of any env through an observation map: its cameras (and depth), state, action.

    Raises:
        KeyError: a map path is not in the observation space (names the available ones).
        ValueError: a camera is no uint8 ``(H, W, 3)`` image, there is no state, or the action space is
            not a ``Box`` vector.
    """
    from gymnasium import spaces

    obs_space = vec_env.single_observation_space
    feats: dict[str, dict] = {}
    for cam, path in obs_map.cameras.items():
        space = lookup(obs_space, path, f"camera {cam!r}")
        shape = tuple(getattr(space, "shape", None) or ())
        if len(shape) != 3 or shape[-1] != 3 or getattr(space, "dtype", None) != np.uint8:
            raise ValueError(f"camera {cam!r} ({path!r}) is {space}; cameras must be uint8 (H, W, 3) images")
        feats[image_key(cam)] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
    for cam, path in obs_map.depth.items():
        shape = tuple(lookup(obs_space, path, f"depth of {cam!r}").shape)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] != 1):
            raise ValueError(
                f"depth of {cam!r} ({path!r}) has shape {shape}; depth maps are (H, W) or (H, W, 1)"
            )
        feats[depth_key(cam)] = {"dtype": "uint16", "shape": shape[:2], "names": ["height", "width"]}
    if obs_map.state is None:
        raise ValueError(
            "recording needs a state vector (training reads observation.state): set "
            "ObservationMap(state='path/in/obs'), e.g. state='proprio'"
        )
    state_dim = int(np.prod(lookup(obs_space, obs_map.state, "state").shape))
    feats[OBS_STATE] = {
        "dtype": "float32",
        "shape": (state_dim,),
        "names": [f"state_{i}" for i in range(state_dim)],
    }
    action = vec_env.single_action_space
    if not isinstance(action, spaces.Box) or len(action.shape) != 1:
        raise ValueError(f"the env's action space is {action}; the recorder stores Box (A,) actions")
    names = [f"action_{i}" for i in range(action.shape[0])]
    feats[ACTION] = {"dtype": "float32", "shape": tuple(action.shape), "names": names}
    return feats


def _frame(obs: Mapping[str, Any], i: int, obs_map: ObservationMap, action: np.ndarray) -> dict[str, Any]:
    """Row ``i`` of a vector env's observation as a dataset frame (cameras, depth, state) plus ``action``."""
    frame = {image_key(c): np.asarray(lookup(obs, p, f"camera {c!r}")[i]) for c, p in obs_map.cameras.items()}
    for cam, path in obs_map.depth.items():
        depth = np.asarray(lookup(obs, path, f"depth of {cam!r}")[i])
        frame[depth_key(cam)] = depth_to_millimetres(depth[..., 0] if depth.ndim == 3 else depth)
    frame[OBS_STATE] = np.asarray(lookup(obs, obs_map.state, "state")[i], dtype=np.float32).reshape(-1)
    frame[ACTION] = np.asarray(action, dtype=np.float32)
    return frame


def _recording_map(
    obs_map: ObservationMap | Mapping[str, Any], cameras: Sequence[str] | None
) -> ObservationMap:
    """The map restricted to the recorded ``cameras`` (None: all)."""
    obs_map = ObservationMap.from_dict(obs_map) if isinstance(obs_map, Mapping) else obs_map
    cameras = list(cameras or obs_map.cameras)
    unknown = [c for c in cameras if c not in obs_map.cameras]
    if unknown:
        raise KeyError(f"camera(s) {unknown} not in the observation map; it has {list(obs_map.cameras)}")
    return ObservationMap(
        cameras={c: obs_map.cameras[c] for c in cameras},
        state=obs_map.state,
        instruction=obs_map.instruction,
        depth={c: p for c, p in obs_map.depth.items() if c in cameras},
        success=obs_map.success,
    )


def record(
    env_id: str,
    out: str | os.PathLike,
    episodes: int,
    cameras: Sequence[str] | None = None,
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
    obs_map: ObservationMap | Mapping[str, Any] | None = None,
    expert: str | Callable | None = None,
) -> RecordSummary:
    """Record ``episodes`` expert demonstrations of ``env_id`` into the dataset at ``out``.

    Args:
        env_id: a registered Gymnasium id, e.g. ``"fastvla/PickCube-v0"``; with ``obs_map`` also
            ``"module:Class"`` or ``"module:EnvId"`` (see :func:`~fastvla.utils.entry_points.make_env`).
        out: dataset folder (created, or appended to when it holds a dataset with the same features).
        episodes: episodes to save.
        cameras: cameras to record (None: ``front`` and ``wrist`` of a FastVLA env, every camera of
            ``obs_map``).
        image_size: rendered (and stored) resolution (FastVLA envs).
        num_envs: parallel envs (worker processes when > 1).
        keep_failed: also save episodes in which the expert failed.
        codec: video codec, "h264" (fast) or "av1".
        seed: seed of the first reset (env ``i`` gets ``seed + i``); ``None`` continues after the seeds of
            earlier recordings into ``out`` (0 for a new dataset), so appended episodes are new ones.
        control_mode: the env's control mode (FastVLA envs).
        expert_noise: noise the env adds to the expert's actions (diversity; FastVLA envs).
        max_attempts: stop after this many finished episodes (default ``5 * episodes + num_envs``).
        env_kwargs: further env constructor arguments (with ``obs_map``: all of them).
        progress: show a progress bar.
        depth: also record each camera's depth map (the env is built with ``depth=True``) as
            ``observation.depth.<cam>``, uint16 millimetres (FastVLA envs; with ``obs_map``, its ``depth``
            paths are recorded).
        obs_map: where any env keeps cameras, state, instruction and success
            (:class:`~fastvla.policies.ObservationMap` or its dict form); ``None``: a FastVLA env.
        expert: ``"module:function"`` or a callable ``(env, obs, info) -> action`` giving the expert's
            action; ``None``: the env's own ``expert_action()``.

    Returns:
        A :class:`RecordSummary`.

    Example:
        >>> record("fastvla/PickCube-v0", "data/pick", episodes=200, num_envs=2)  # doctest: +SKIP
        >>> record("point_env:PointEnv", "data/point", episodes=20, expert="point_env:expert",
        ...        obs_map={"cameras": {"top": "sensors/rgb_top"}, "state": "proprio",
        ...                 "instruction": "info:goal_text", "success": "info:solved"})  # doctest: +SKIP
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    kwargs = dict(env_kwargs or {})
    if obs_map is None:  # a FastVLA env: its constructor takes the cameras, resolution and control mode
        cameras = tuple(cameras or ("front", "wrist"))
        kwargs.update(cameras=cameras, image_size=image_size, control_mode=control_mode)
        kwargs.update(expert_noise=expert_noise)
        if depth:
            kwargs["depth"] = True
        rec_map = _recording_map(ObservationMap.for_fastvla_env(cameras, depth), None)
    elif depth:
        raise ValueError(
            "depth=True builds a FastVLA env with depth; with an obs_map, map depth paths instead"
        )
    else:
        rec_map = _recording_map(obs_map, cameras)
    max_attempts = max_attempts if max_attempts is not None else 5 * episodes + num_envs
    summary = RecordSummary(out=Path(out), requested=episodes)
    free = next_free_seed(out)
    seed = free if seed is None else seed
    start = time.perf_counter()
    vec_env = make_recording_env(env_id, num_envs, kwargs, expert)
    try:
        fps = int(vec_env.metadata.get("render_fps") or 10)
        writer = LeRobotDatasetWriter(
            out,
            fps=fps,
            features=(
                features_from_spaces(vec_env, cameras, control_mode, depth)
                if obs_map is None
                else features_from_map(vec_env, rec_map)
            ),
            robot_type="fastvla_sim" if obs_map is None else None,
            codec=codec,
        )
        bar = tqdm(total=episodes, desc=f"recording {env_id}", unit="episode", disable=not progress)
        _reserve_seeds(out, seed, num_envs, free, None if obs_map is None else rec_map)
        summary.seed = seed
        with writer, bar:  # on any exit the writer drops a partial episode and writes its metadata
            _rollouts(vec_env, writer, summary, bar, rec_map, seed, keep_failed, max_attempts)
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        vec_env.close()


def _rollouts(
    vec_env: Any,
    writer: LeRobotDatasetWriter,
    summary: RecordSummary,
    bar: tqdm,
    obs_map: ObservationMap,
    seed: int,
    keep_failed: bool,
    max_attempts: int,
) -> None:
    """Step all envs with the expert until enough episodes are saved (autoreset mode NEXT_STEP)."""
    num_envs, episodes = vec_env.num_envs, summary.requested
    obs, info = vec_env.reset(seed=[seed + i for i in range(num_envs)])
    buffers: list[list[dict[str, Any]]] = [[] for _ in range(num_envs)]
    source = obs_map.instruction or INFO + INFO_TASK  # None: FastVLA's info["task"], required here
    tasks = [str(t) for t in read_instructions(source, obs, info, num_envs)]
    resetting = np.zeros(num_envs, dtype=bool)  # next step() resets these envs (autoreset NEXT_STEP)
    while summary.episodes_saved < episodes and summary.episodes_attempted < max_attempts:
        actions = expert_actions(vec_env, NO_EXPERT_FIX)
        for i in range(num_envs):
            if not resetting[i]:
                buffers[i].append(_frame(obs, i, obs_map, actions[i]))
        obs, _, terminated, truncated, info = vec_env.step(actions)
        ended = ~resetting & (np.asarray(terminated) | np.asarray(truncated))
        new_tasks = read_instructions(source, obs, info, num_envs) if resetting.any() else tasks
        successes = obs_map.successes(info, terminated, num_envs, strict=True) if ended.any() else ended
        for i in range(num_envs):
            if resetting[i]:  # this step was the reset: a new episode starts with this observation
                resetting[i] = False
                tasks[i] = str(new_tasks[i])
                continue
            if not ended[i]:
                continue
            resetting[i] = True
            success = bool(successes[i])
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
