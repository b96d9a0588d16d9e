"""FastVLA's simulated tabletop suite: MuJoCo manipulation tasks with language instructions.

Importing this package registers the Gymnasium ids and, if ``MUJOCO_GL`` is unset, exports the headless
GL backend it finds (EGL, else OSMesa) so that a later ``import mujoco`` renders headless; MuJoCo itself
is loaded when an env is created::

    import gymnasium as gym
    import fastvla.envs  # noqa: F401

    env = gym.make("fastvla/PickCube-v0", cameras=("front", "wrist"), image_size=128)
    obs, info = env.reset(seed=0)
    print(info["task"])  # "pick up the red cube"
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from fastvla.envs.colors import COLORS, HELD_OUT_COLOR, TRAIN_COLORS
from fastvla.envs.rendering import select_backend

# id -> (entry point, max_episode_steps at 10 Hz)
TASKS: dict[str, tuple[str, int]] = {
    "fastvla/ReachCube-v0": ("fastvla.envs.reach_cube:ReachCubeEnv", 40),
    "fastvla/PickCube-v0": ("fastvla.envs.pick_cube:PickCubeEnv", 80),
    "fastvla/PlaceCube-v0": ("fastvla.envs.place_cube:PlaceCubeEnv", 120),
    "fastvla/PushCube-v0": ("fastvla.envs.push_cube:PushCubeEnv", 120),
    "fastvla/StackCube-v0": ("fastvla.envs.stack_cube:StackCubeEnv", 150),
}
ENV_IDS = tuple(TASKS)

# Without headless GL, creating an env raises the same error naming the packages to install.
with contextlib.suppress(RuntimeError):
    select_backend()

for _env_id, (_entry_point, _max_steps) in TASKS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=_max_steps)


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` that also works in a fresh worker process (it imports this package first).

    Pickled by reference, so ``functools.partial(make_env, env_id, ...)`` is a valid ``env_fn`` for
    ``AsyncVectorEnv`` under the ``forkserver``/``spawn`` start methods.
    """
    return gym.make(env_id, **kwargs)


def make_vec_env(
    env_id: str, num_envs: int, asynchronous: bool = True, context: str = "forkserver", **kwargs: Any
) -> gym.vector.VectorEnv:
    """A vector env of ``num_envs`` copies of ``env_id`` (env kwargs in ``kwargs``).

    Asynchronous envs use the ``forkserver`` start method by default: a process that forks after a
    renderer exists deadlocks, so never use ``"fork"`` once this process has rendered.
    """
    fns = [functools.partial(make_env, env_id, **kwargs) for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context=context)
    return gym.vector.SyncVectorEnv(fns)


__all__ = ["COLORS", "ENV_IDS", "HELD_OUT_COLOR", "TASKS", "TRAIN_COLORS", "make_env", "make_vec_env"]
