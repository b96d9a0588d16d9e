"""Third-party MuJoCo envs in FastVLA's observation convention: Meta-World, gym-aloha, Fetch.

FastVLA policies read ``pixels/<camera>`` images, an ``agent_pos`` state and an instruction
(``info["task"]``). Third-party envs differ: Meta-World returns a 39-D vector and renders one camera
through ``render()``, Fetch returns a goal dict and no images, none of them has an instruction. Two
wrappers close the gap and work on any MuJoCo env:

* :class:`RenderCameras` renders named cameras of ``env.unwrapped.model`` into ``obs["pixels"]``
  (shadows and reflections off for speed), adds an ``agent_pos`` extracted from the original observation,
  and keeps that observation (``environment_state`` for a vector, its own keys for a dict);
* :class:`LanguageInstruction` puts a fixed instruction in ``info["task"]`` and ``task_description`` and
  reports ``info["is_success"]`` as a bool (Meta-World calls it ``success``).

The ``make_*`` builders return ready envs; the ``*_observation_map`` helpers the matching
``fastvla.policies.ObservationMap``. The packages pin old MuJoCo releases, so they live in extras
(``pip install "fastvla[thirdparty]"``, see docs/thirdparty.md), and this module imports them only when
a builder is called::

    from fastvla.envs.thirdparty import make_metaworld, metaworld_observation_map

    env = make_metaworld("reach-v3", cameras=("corner2", "topview"), image_size=128)
    obs, info = env.reset(seed=0)  # obs["pixels"]["corner2"]: uint8 (128, 128, 3); info["task"]: str
    obs, reward, terminated, truncated, info = env.step(env.get_wrapper_attr("expert_action")())

The builders are also registered as Gymnasium ids (``fastvla/MetaWorld-v0``, ``fastvla/Aloha-v0``,
``fastvla/Fetch-v0``) when this module is imported; ``gym.make("fastvla.envs.thirdparty:fastvla/
MetaWorld-v0", task="push-v3")`` imports it first, also inside vector-env workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import register, registry

from fastvla.constants import GYM_DEPTH, GYM_PIXELS, GYM_STATE, INFO_SUCCESS, INFO_TASK
from fastvla.envs.rendering import preload_triton

ENVIRONMENT_STATE = "environment_state"
"""Key under which :class:`RenderCameras` keeps a vector observation (LeRobot's name for it)."""

# Install hints: extra name -> packages it installs.
EXTRAS = {"metaworld": "metaworld", "aloha": "gym-aloha", "robotics": "gymnasium-robotics"}

METAWORLD_INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "reach the goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
}
"""Instructions of common Meta-World tasks; others get their name in words ("hammer-v3" -> "hammer")."""

METAWORLD_FLIPPED_CAMERAS = ("corner", "corner2")
"""Meta-World cameras whose images come out rotated by 180 degrees; flipped back by default."""

ALOHA_INSTRUCTIONS: dict[str, str] = {
    "AlohaInsertion-v0": "insert the peg into the socket",
    "AlohaTransferCube-v0": "pick up the cube with the right arm and hand it over to the left arm",
}

FETCH_INSTRUCTIONS: dict[str, str] = {
    "FetchReach": "move the gripper to the red target",
    "FetchPush": "push the black block to the red target",
    "FetchPickAndPlace": "pick up the black block and place it at the red target",
    "FetchSlide": "slide the black puck to the red target",
}


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module!r} is not installed: pip install 'fastvla[{extra}]' (it pins its own MuJoCo "
            "release: use a separate virtual environment, see docs/thirdparty.md)"
        ) from err


def _image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


class _Renderer:
    """One lazily created ``mujoco.Renderer`` drawing named cameras and free cameras (orbit configs).

    Created in the process that renders (a GL context does not survive fork), after ``preload_triton``
    (Triton loaded after Mesa's LLVM segfaults; see ENVIRONMENT.md).
    """

    def __init__(self, model: Any, height: int, width: int, shadows: bool, reflections: bool) -> None:
        self.model, self.height, self.width = model, height, width
        self.shadows, self.reflections = shadows, reflections
        self._renderer: Any = None
        self._pid: int | None = None

    def render_depth(self, data: Any, camera: Any) -> np.ndarray:
        """Depth in metres along the camera's optical axis, float32 ``(H, W)``."""
        self.render(data, camera)  # creates the renderer if needed
        self._renderer.enable_depth_rendering()
        try:
            self._renderer.update_scene(data, camera=camera)
            return self._renderer.render().astype(np.float32, copy=True)
        finally:
            self._renderer.disable_depth_rendering()

    def render(self, data: Any, camera: Any) -> np.ndarray:
        import mujoco

        if self._renderer is None or self._pid != os.getpid():
            preload_triton()
            vis = self.model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, self.width), max(vis.offheight, self.height)
            self._renderer, self._pid = mujoco.Renderer(self.model, self.height, self.width), os.getpid()
        self._renderer.update_scene(data, camera=camera)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.shadows
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.reflections
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None and self._pid == os.getpid():
            self._renderer.close()
        self._renderer = None


def _free_camera(config: Mapping[str, Any]) -> Any:
    """A ``mujoco.MjvCamera`` orbiting ``lookat`` (Gymnasium's ``default_camera_config`` keys)."""
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    for key in ("distance", "azimuth", "elevation"):
        if key in config:
            setattr(cam, key, float(config[key]))
    if "lookat" in config:
        cam.lookat[:] = np.asarray(config["lookat"], dtype=np.float64)
    return cam


class RenderCameras(gym.ObservationWrapper):
    """Render named MuJoCo cameras into ``obs["pixels"]`` for envs whose observation has no images.

    The renderer is created lazily in the process that steps the env (safe for async vector envs).

    Args:
        env: A MuJoCo env (``env.unwrapped.model`` and ``.data``).
        cameras: Camera names of the model, e.g. ``("corner2", "topview")``, or of ``free_cameras``.
        image_size: Image size, an int or ``(H, W)``.
        free_cameras: Extra cameras that are not in the model: name -> orbit config (``distance``,
            ``azimuth``, ``elevation``, ``lookat``), e.g. an env's ``default_camera_config``.
        depth: Also render each camera's depth map into ``obs["depth"]`` (float32 ``(H, W)``, metres).
        state: Function from the original observation to the ``agent_pos`` vector (None: no ``agent_pos``).
        flip: Cameras whose images are rotated by 180 degrees (both axes flipped).
        shadows: Render shadows (about 2x slower on software GL).
        reflections: Render reflections.
    """

    def __init__(
        self,
        env: gym.Env,
        cameras: Sequence[str],
        image_size: int | tuple[int, int] = 128,
        state: Callable[[Any], np.ndarray] | None = None,
        flip: Sequence[str] = (),
        shadows: bool = False,
        reflections: bool = False,
        free_cameras: Mapping[str, Mapping[str, Any]] | None = None,
        depth: bool = False,
    ) -> None:
        super().__init__(env)
        self.depth = bool(depth)
        model = env.unwrapped.model
        names = [model.camera(i).name for i in range(model.ncam)] + list(free_cameras or {})
        missing = [c for c in cameras if c not in names]
        if missing or not cameras:
            raise ValueError(f"cameras {list(missing or cameras)} not in the model; available: {names}")
        self.cameras = tuple(cameras)
        self.height, self.width = _image_hw(image_size)
        self.state_fn = state
        self.flip = frozenset(flip)
        self._free = {name: _free_camera(cfg) for name, cfg in (free_cameras or {}).items()}
        self._renderer = _Renderer(model, self.height, self.width, shadows, reflections)
        image = spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        pixels = spaces.Dict({cam: image for cam in self.cameras})
        inner = env.observation_space
        entries: dict[str, spaces.Space] = (
            dict(inner.spaces) if isinstance(inner, spaces.Dict) else {ENVIRONMENT_STATE: _float32_box(inner)}
        )
        entries[GYM_PIXELS] = pixels
        if self.depth:
            depth_map = spaces.Box(0.0, np.inf, (self.height, self.width), np.float32)
            entries[GYM_DEPTH] = spaces.Dict({cam: depth_map for cam in self.cameras})
        if state is not None:
            sample = np.asarray(state(inner.sample()))
            entries[GYM_STATE] = spaces.Box(-np.inf, np.inf, sample.shape, np.float32)
        self.observation_space = spaces.Dict(entries)

    def observation(self, observation: Any) -> dict[str, Any]:
        """The original observation plus ``pixels`` (and ``agent_pos``)."""
        data = self.env.unwrapped.data
        rgb = {}
        for cam in self.cameras:
            image = self._renderer.render(data, self._free.get(cam, cam))
            rgb[cam] = np.ascontiguousarray(image[::-1, ::-1]) if cam in self.flip else image
        if isinstance(observation, Mapping):
            out = dict(observation)
        else:
            out = {ENVIRONMENT_STATE: np.asarray(observation, dtype=np.float32)}
        out[GYM_PIXELS] = rgb
        if self.depth:
            out[GYM_DEPTH] = {}
            for cam in self.cameras:
                d = self._renderer.render_depth(data, self._free.get(cam, cam))
                out[GYM_DEPTH][cam] = np.ascontiguousarray(d[::-1, ::-1]) if cam in self.flip else d
        if self.state_fn is not None:
            out[GYM_STATE] = np.asarray(self.state_fn(observation), dtype=np.float32)
        return out

    def close(self) -> None:
        """Free the renderer, then close the env."""
        self._renderer.close()
        super().close()


def _float32_box(space: spaces.Space) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise TypeError(f"RenderCameras needs a Box or Dict observation space, got {space}")
    return spaces.Box(-np.inf, np.inf, space.shape, np.float32)


class LanguageInstruction(gym.Wrapper):
    """Supply a fixed instruction (``info["task"]``, ``task_description``) and a bool ``is_success``.

    Args:
        env: Any Gymnasium env.
        instruction: The language instruction of every episode.
        success_key: ``info`` key holding success when it is not ``is_success`` (Meta-World: ``success``).
    """

    def __init__(self, env: gym.Env, instruction: str, success_key: str = INFO_SUCCESS) -> None:
        super().__init__(env)
        if not instruction:
            raise ValueError("instruction must be a non-empty string")
        self.task_description = instruction
        self.success_key = success_key

    def _info(self, info: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(info)
        out[INFO_TASK] = self.task_description
        out[INFO_SUCCESS] = bool(out.get(self.success_key, False))
        return out

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(info)


# ---------------------------------------------------------------------------------------------- Meta-World
class MetaWorldSeeding(gym.Wrapper):
    """Seed-determined Meta-World task variants and the task's scripted expert.

    ``Meta-World/MT1`` picks one of its 50 goal/object variants on every reset *before* seeding, so the same
    seed gives different episodes. Here the variant is drawn from the reset seed instead (the variants
    themselves are fixed by ``make_metaworld(benchmark_seed=...)``); the scripted
    policy of ``metaworld.policies`` is exposed as ``expert_action()`` (FastVLA's env convention).
    """

    def __init__(self, env: gym.Env, task: str, expert_noise: float = 0.0) -> None:
        super().__init__(env)
        self.task = task
        self.expert_noise = float(expert_noise)
        self._tasks = env.get_wrapper_attr("tasks")
        env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
        self._rng = np.random.default_rng()
        self._raw_obs: np.ndarray | None = None
        policies = importlib.import_module("metaworld.policies")
        self._expert = policies.ENV_POLICY_MAP[task]() if task in policies.ENV_POLICY_MAP else None

    @property
    def spec(self) -> Any:
        """Our registered id with this task: MT1's own spec has a lambda entry point, which async vector-env
        workers cannot send back (``evaluate`` asks them for ``get_attr("spec")``)."""
        return dataclasses.replace(registry["fastvla/MetaWorld-v0"], kwargs={"task": self.task})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.env.unwrapped.set_task(self._tasks[int(self._rng.integers(len(self._tasks)))])
        obs, info = self.env.reset(seed=seed, options=options)
        self._raw_obs = obs
        return obs, info

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._raw_obs = obs
        return obs, reward, terminated, truncated, info

    def expert_action(self) -> np.ndarray:
        """The scripted policy's action for the current state (float32, in the action space)."""
        if self._expert is None:
            raise NotImplementedError(f"metaworld.policies has no scripted policy for {self.task!r}")
        if self._raw_obs is None:
            raise RuntimeError("call reset() before expert_action()")
        action = np.asarray(self._expert.get_action(self._raw_obs), dtype=np.float32)
        if self.expert_noise > 0:
            action = action + self.np_random.normal(0.0, self.expert_noise, action.shape).astype(np.float32)
        return np.clip(action, self.action_space.low, self.action_space.high)


def _metaworld_state(obs: np.ndarray) -> np.ndarray:
    return np.asarray(obs[..., :4], dtype=np.float32)  # hand xyz + gripper opening


def make_metaworld(
    task: str = "reach-v3",
    cameras: Sequence[str] = ("corner2", "topview"),
    image_size: int | tuple[int, int] = 128,
    instruction: str | None = None,
    max_episode_steps: int | None = None,
    terminate_on_success: bool = False,
    flip: Sequence[str] | None = None,
    shadows: bool = False,
    reflections: bool = False,
    render_mode: str | None = None,
    control_mode: str = "ee_delta",
    expert_noise: float = 0.0,
    benchmark_seed: int = 0,
    depth: bool = False,
) -> gym.Env:
    """A Meta-World MT1 task with two rendered cameras, an instruction and a scripted expert.

    Observation: ``pixels: {cam: uint8 (H, W, 3)}``, ``agent_pos: float32 (4,)`` (hand xyz, gripper),
    ``environment_state: float32 (39,)`` (Meta-World's observation). ``info["is_success"]`` is
    Meta-World's ``success``; episodes are truncated after ``max_episode_steps`` (500 by default).
    Actions: end-effector xyz deltas and gripper effort in [-1, 1] (4-D).

    Args:
        task: A Meta-World v3 task name (``"reach-v3"``, ``"push-v3"``...).
        cameras: Named cameras: ``topview``, ``corner``, ``corner2``, ``corner3``, ``corner4``,
            ``behindGripper``, ``gripperPOV``.
        image_size: Image size, an int or ``(H, W)``.
        instruction: Instruction (default: :data:`METAWORLD_INSTRUCTIONS` or the task name in words).
        max_episode_steps: Truncation (default: Meta-World's 500).
        terminate_on_success: End episodes on success (for recording demonstrations).
        flip: Cameras to rotate by 180 degrees (default: :data:`METAWORLD_FLIPPED_CAMERAS`).
        shadows: Render shadows. reflections: Render reflections.
        render_mode: ``"rgb_array"`` makes ``render()`` return the first camera's image.
        control_mode: Only ``"ee_delta"`` (Meta-World's actions); accepted so FastVLA's recorder can
            build the env like its own.
        expert_noise: Std of Gaussian noise added to the scripted expert's actions (demo diversity).
        benchmark_seed: Seed of MT1's 50 goal/object variants. Fixed by default so every instance (and
            every vector-env worker) has the same variants and ``reset(seed=s)`` means the same episode.
        depth: Also return ``depth: {cam: float32 (H, W)}`` in metres (``record(..., depth=True)``).
    """
    metaworld = _require("metaworld", "metaworld")
    if control_mode != "ee_delta":
        raise ValueError(
            f"control_mode={control_mode!r}: Meta-World only has 'ee_delta' (xyz delta + gripper)"
        )
    if task not in metaworld.ALL_V3_ENVIRONMENTS:
        raise ValueError(
            f"unknown Meta-World task {task!r}; e.g. {sorted(metaworld.ALL_V3_ENVIRONMENTS)[:8]}"
        )
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = gym.make(
        "Meta-World/MT1",
        env_name=task,
        seed=benchmark_seed,
        terminate_on_success=terminate_on_success,
        disable_env_checker=True,
        **kwargs,
    )
    env = MetaWorldSeeding(env, task, expert_noise)
    flip = METAWORLD_FLIPPED_CAMERAS if flip is None else flip
    env = RenderCameras(env, cameras, image_size, _metaworld_state, flip, shadows, reflections, depth=depth)
    env = LanguageInstruction(env, instruction or _metaworld_instruction(task), success_key="success")
    return _with_render(env, cameras[0], render_mode)


def _metaworld_instruction(task: str) -> str:
    return METAWORLD_INSTRUCTIONS.get(task, task.rsplit("-v", 1)[0].replace("-", " "))


class _RenderFirstCamera(gym.Wrapper):
    """``render()`` returns the first camera of the last observation (for eval videos)."""

    def __init__(self, env: gym.Env, camera: str) -> None:
        super().__init__(env)
        self.camera = camera
        self._last: np.ndarray | None = None
        self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}

    @property
    def render_mode(self) -> str:
        return "rgb_array"

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self._last = obs[GYM_PIXELS][self.camera]
        return obs, info

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        self._last = out[0][GYM_PIXELS][self.camera]
        return out

    def render(self) -> np.ndarray | None:
        return self._last


def _with_render(env: gym.Env, camera: str, render_mode: str | None) -> gym.Env:
    if render_mode is None:
        return env
    if render_mode != "rgb_array":
        raise ValueError(f"render_mode={render_mode!r}; only 'rgb_array' or None are supported")
    return _RenderFirstCamera(env, camera)


# ---------------------------------------------------------------------------------------------- gym-aloha
def make_aloha(task: str = "AlohaTransferCube-v0", instruction: str | None = None, **kwargs: Any) -> gym.Env:
    """A gym-aloha bimanual task (14-D actions) with its ``top`` camera and an instruction.

    gym-aloha already returns ``pixels: {top: uint8 (480, 640, 3)}`` and ``agent_pos: (14,)`` with
    ``obs_type="pixels_agent_pos"`` (the default here) and ``info["is_success"]``; this adds the
    instruction. Extra keyword arguments go to ``gym.make`` (e.g. ``observation_width``).
    """
    preload_triton()  # dm_control sets up its GL backend when imported: Triton must be loaded first
    _require("gym_aloha", "aloha")
    kwargs.setdefault("obs_type", "pixels_agent_pos")
    env = gym.make(f"gym_aloha/{task}", disable_env_checker=True, **kwargs)
    return LanguageInstruction(env, instruction or ALOHA_INSTRUCTIONS.get(task, task))


# ---------------------------------------------------------------------------------------------- Fetch
FETCH_BEHIND_CAMERA = {"distance": 2.5, "azimuth": 132.0, "elevation": -14.0, "lookat": (1.3, 0.75, 0.55)}
"""The view of Fetch's ``render()`` (its ``DEFAULT_CAMERA_CONFIG``)."""


def _fetch_state(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    o = np.asarray(obs["observation"], dtype=np.float32)
    return np.concatenate([o[..., 0:3], o[..., 9:11]], axis=-1)  # gripper xyz + finger positions


class FetchHeuristic(gym.Wrapper):
    """A scripted expert for Fetch tasks (``expert_action()``): a proportional controller in Cartesian space.

    Reach: move the gripper to the goal. PickAndPlace: hover over the block with open fingers, descend,
    close them for a few steps, then carry the block to the goal. Push and Slide have none
    (``NotImplementedError``). Fetch's observation holds
    gripper xyz (0:3), block xyz (3:6) and the two finger positions (9:11); actions are xyz deltas (scaled
    by Fetch's 5 cm per unit) and a gripper command (+1 opens, -1 closes).
    """

    GAIN = 10.0  # action per metre of error (Fetch moves 5 cm per unit action)

    def __init__(self, env: gym.Env, task: str) -> None:
        super().__init__(env)
        self.kind = task.split("-")[0].removesuffix("Dense").removeprefix("Fetch")
        self._obs: Mapping[str, np.ndarray] | None = None
        self._phase = 0

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self._obs, self._phase = obs, 0
        return obs, info

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        self._obs = out[0]
        return out

    def _move(self, grip: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
        delta = np.clip((target - grip) * self.GAIN, -1.0, 1.0)
        return np.append(delta, gripper).astype(np.float32)

    def expert_action(self) -> np.ndarray:
        """The heuristic's action for the current state (float32, in the action space)."""
        if self._obs is None:
            raise RuntimeError("call reset() before expert_action()")
        o, goal = np.asarray(self._obs["observation"]), np.asarray(self._obs["desired_goal"])
        grip, block = o[0:3], o[3:6]
        if self.kind == "Reach":
            return self._move(grip, goal, 0.0)
        if self.kind == "PickAndPlace":
            # phases: 0 hover above the block, 1 descend, 2..7 close the fingers, then carry (sticky)
            if self._phase == 0 and np.linalg.norm(grip[:2] - block[:2]) < 0.01:
                self._phase = 1
            if self._phase == 1 and np.linalg.norm(grip - block) < 0.01:
                self._phase = 2
            if self._phase == 0:
                return self._move(grip, block + np.array([0.0, 0.0, 0.05]), 1.0)
            if self._phase == 1:
                return self._move(grip, block, 1.0)
            if self._phase < 8:
                self._phase += 1
                return self._move(grip, block, -1.0)
            return self._move(grip, goal, -1.0)
        raise NotImplementedError(f"no heuristic expert for Fetch{self.kind}")


def make_fetch(
    task: str = "FetchReach-v4",
    cameras: Sequence[str] = ("external_camera_0", "behind"),
    image_size: int | tuple[int, int] = 128,
    instruction: str | None = None,
    shadows: bool = False,
    reflections: bool = False,
    render_mode: str | None = None,
    depth: bool = False,
    **kwargs: Any,
) -> gym.Env:
    """A gymnasium-robotics Fetch task (goal dict observation) with rendered cameras and an instruction.

    Observation: Fetch's ``observation``/``achieved_goal``/``desired_goal`` plus
    ``pixels: {cam: uint8 (H, W, 3)}`` and ``agent_pos: float32 (5,)`` (gripper xyz, two fingers).
    Cameras: ``external_camera_0`` (front) and ``behind`` (Fetch's own ``render()`` view, a free camera);
    the model's ``head_camera_rgb`` and ``gripper_camera_rgb`` sit inside the robot's meshes and see white.
    ``expert_action()`` is :class:`FetchHeuristic` (Reach, PickAndPlace).
    """
    robotics = _require("gymnasium_robotics", "robotics")
    gym.register_envs(robotics)
    env = FetchHeuristic(gym.make(task, disable_env_checker=True, **kwargs), task)
    free = {"behind": FETCH_BEHIND_CAMERA}
    env = RenderCameras(
        env, cameras, image_size, _fetch_state, (), shadows, reflections, free_cameras=free, depth=depth
    )
    env = LanguageInstruction(env, fetch_instruction(task, instruction))
    return _with_render(env, cameras[0], render_mode)


# ---------------------------------------------------------------------------------------------- maps
def _observation_map(cameras: Mapping[str, str], instruction: str | None, depth: bool = False) -> Any:
    try:
        from fastvla.policies import ObservationMap
    except ImportError as err:
        raise ImportError(f"fastvla.policies.ObservationMap is not available ({err})") from err
    # pixels/<env cam> -> depth/<env cam>: the depth map of the same camera
    depth_paths = {m: GYM_DEPTH + p.removeprefix(GYM_PIXELS) for m, p in cameras.items()} if depth else {}
    return ObservationMap(cameras=dict(cameras), state=GYM_STATE, instruction=instruction, depth=depth_paths)


def _camera_paths(env_cameras: Sequence[str], model_cameras: Sequence[str] | None) -> dict[str, str]:
    model_cameras = tuple(model_cameras or env_cameras)
    if len(model_cameras) != len(env_cameras):
        raise ValueError(
            f"model_cameras {list(model_cameras)} must pair up with env cameras {list(env_cameras)}"
        )
    return {m: f"{GYM_PIXELS}/{e}" for m, e in zip(model_cameras, env_cameras)}


def metaworld_observation_map(
    task: str = "reach-v3",
    cameras: Sequence[str] = ("corner2", "topview"),
    model_cameras: Sequence[str] | None = None,
    instruction: str | None = None,
    depth: bool = False,
) -> Any:
    """``ObservationMap`` for :func:`make_metaworld` (``model_cameras`` renames cameras for the model;
    ``depth`` maps each camera's depth for models trained with depth)."""
    return _observation_map(
        _camera_paths(cameras, model_cameras), instruction or _metaworld_instruction(task), depth
    )


def aloha_observation_map(
    task: str = "AlohaTransferCube-v0", model_camera: str = "top", instruction: str | None = None
) -> Any:
    """``ObservationMap`` for :func:`make_aloha`: the ``top`` camera and the 14-D ``agent_pos``."""
    return _observation_map({model_camera: f"{GYM_PIXELS}/top"}, instruction or ALOHA_INSTRUCTIONS.get(task))


def fetch_observation_map(
    task: str = "FetchReach-v4",
    cameras: Sequence[str] = ("external_camera_0", "behind"),
    model_cameras: Sequence[str] | None = None,
    instruction: str | None = None,
    depth: bool = False,
) -> Any:
    """``ObservationMap`` for :func:`make_fetch` (same instruction text as the env's)."""
    return _observation_map(
        _camera_paths(cameras, model_cameras), fetch_instruction(task, instruction), depth
    )


def fetch_instruction(task: str, instruction: str | None = None) -> str:
    """The instruction :func:`make_fetch` gives ``task``: ``instruction``, else the task's sentence from
    ``FETCH_INSTRUCTIONS``, else the task's base name (``FetchSlideDense-v4`` -> ``FetchSlide``)."""
    base = task.split("-")[0].removesuffix("Dense")
    return instruction or FETCH_INSTRUCTIONS.get(base, base)


# Gymnasium ids: gym.make("fastvla.envs.thirdparty:fastvla/MetaWorld-v0", task="push-v3").
BUILDERS: dict[str, str] = {
    "fastvla/MetaWorld-v0": "fastvla.envs.thirdparty:make_metaworld",
    "fastvla/Aloha-v0": "fastvla.envs.thirdparty:make_aloha",
    "fastvla/Fetch-v0": "fastvla.envs.thirdparty:make_fetch",
}
for _env_id, _entry_point in BUILDERS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)
