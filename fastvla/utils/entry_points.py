"""Envs and experts named on the command line: Gymnasium ids, ``module:Class`` and ``module:function``.

``fastvla record`` and ``fastvla eval`` take any Gymnasium env through :func:`make_env`:

- a registered id, ``fastvla/PickCube-v0`` or ``CartPole-v1``;
- ``module:EnvId``, Gymnasium's own form: importing ``module`` registers ``EnvId``;
- ``module:Class`` (or ``module:make_env``), an entry point called with the env keyword arguments, as a
  Gymnasium ``register(entry_point=...)`` would (``gymnasium.make`` adds its usual wrappers; pass
  ``max_episode_steps`` among the keyword arguments for a time limit).

``module`` is a dotted module name importable from ``sys.path`` (``PYTHONPATH``), from the current directory,
or the path of a ``.py`` file (``examples/custom_env/point_env.py:PointEnv``). The code is the user's own,
named on the command line; nothing is ever unpickled or executed from a dataset.

An expert (``fastvla record --expert module:function``) is a callable ``expert(env, obs, info) -> action``
given the env as ``gymnasium.make`` returned it (``env.unwrapped`` is the raw env) and the latest
observation and info of that env. :class:`ExpertAction` exposes it as ``env.expert_action()``, the method
FastVLA's own envs have, so the recorder reaches it in vector-env workers through
``vec_env.call("expert_action")``.

Example:
    >>> env = make_env("fastvla.eval.toy:ToyReachEnv", {"image_size": 8})
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), info["task"]
    (['agent_pos', 'pixels'], 'reach the red target')
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym

#: The signature of an expert: ``(env, obs, info) -> action``.
Expert = Callable[[gym.Env, Any, dict], Any]


def _import_file(path: Path) -> ModuleType:
    """Import a ``.py`` file as the module named by its stem (once: later calls reuse it)."""
    if not path.is_file():
        raise FileNotFoundError(f"no Python file {path} (from a 'path/to/module.py:name' entry point)")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_module(name: str) -> ModuleType:
    """Import a user module: a dotted name, or a ``.py`` file path.

    A dotted name not found on ``sys.path`` is looked for in the current directory too (``python -m``
    would find it there; the ``fastvla`` console script does not put it on ``sys.path``). The directory
    is appended, so it never shadows installed packages.

    Raises:
        ModuleNotFoundError: neither works (names the module and where to put it).
    """
    if name.endswith(".py") or "/" in name or os.sep in name:
        return _import_file(Path(name))
    top = name.split(".")[0]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != top:  # the module exists; something it imports does not
            raise
        missing = err
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != top:
                raise
            missing = err
    raise ModuleNotFoundError(
        f"cannot import {name!r} ({missing}); put its folder on PYTHONPATH, run from that folder, or pass "
        "the file's path: path/to/module.py:name",
        name=missing.name,
    ) from missing


def load_entry_point(spec: str, what: str = "entry point") -> Any:
    """The object named by ``"module:attribute"`` (``attribute`` may be dotted: ``module:Class.method``).

    Args:
        spec: ``"package.module:name"`` or ``"path/to/file.py:name"``.
        what: what it is for, used in errors (``"expert"``).

    Raises:
        ValueError: ``spec`` is not of the form ``module:attribute``.
        KeyError: the module has no such attribute (names the public ones).
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} is not 'module:attribute', e.g. 'my_envs.point:expert'")
    obj: Any = import_module(module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise KeyError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}; it has {names}")
        obj = getattr(obj, part)
    return obj


def make_env(env: str, kwargs: Mapping[str, Any] | None = None) -> gym.Env:
    """A Gymnasium env from a registered id, ``module:EnvId`` or ``module:Class`` (see the module docs).

    Args:
        env: the env spec string.
        kwargs: keyword arguments of ``gymnasium.make`` and the env's constructor.

    Raises:
        KeyError: ``module:name`` names neither a registered id nor an attribute of the module.
    """
    kwargs = dict(kwargs or {})
    if env.startswith("fastvla/"):
        import fastvla.envs  # noqa: F401  (registers the fastvla/* ids, in worker processes too)
    module_name, sep, name = env.rpartition(":")
    if env in gym.registry or not sep:
        return gym.make(env, **kwargs)
    module = import_module(module_name)
    if name in gym.registry:  # Gymnasium's "module:EnvId": importing the module registered the id
        return gym.make(name, **kwargs)
    if not callable(getattr(module, name, None)):
        raise KeyError(
            f"env {env!r}: importing {module_name} registered no Gymnasium id {name!r} and it has no "
            f"env class or function {name!r}; public names: {sorted(n for n in dir(module) if n[:1] != '_')}"
        )
    entry_point = getattr(module, name)
    return gym.make(gym.envs.registration.EnvSpec(id=name, entry_point=entry_point), **kwargs)


class ExpertAction(gym.Wrapper):
    """Gives an env an ``expert_action()`` method that asks ``expert(env, obs, info)``.

    The wrapper keeps the latest observation and info (from ``reset`` and ``step``) for the expert; the
    env passed to it is the wrapped one, as ``gymnasium.make`` returned it.

    Args:
        env: the env.
        expert: the callable, or its ``"module:function"`` entry point.
    """

    def __init__(self, env: gym.Env, expert: Expert | str) -> None:
        super().__init__(env)
        self.expert: Expert = load_entry_point(expert, "expert") if isinstance(expert, str) else expert
        if not callable(self.expert):
            raise TypeError(f"expert {expert!r} is not callable; pass a function (env, obs, info) -> action")
        self._last: tuple[Any, dict] | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        """Reset the env and remember its observation and info."""
        obs, info = self.env.reset(**kwargs)
        self._last = (obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        """Step the env and remember its observation and info."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last = (obs, info)
        return obs, reward, terminated, truncated, info

    def expert_action(self) -> Any:
        """The expert's action for the latest observation."""
        if self._last is None:
            raise RuntimeError("expert_action() before reset(): reset the env first")
        return self.expert(self.env, *self._last)
