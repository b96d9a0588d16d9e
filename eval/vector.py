"""Vector envs for evaluation: picklable env factories, async workers that start cleanly, env groups."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)


class EnvFactory:
    """A picklable env maker for vector-env workers started with spawn/forkserver.

    ``env_id`` is anything :func:`fastvla.utils.entry_points.make_env` takes: a registered id (``fastvla/...``
    ids import ``fastvla.envs`` first, in the worker process too), ``module:EnvId`` or ``module:Class``.
    Only the strings are pickled; the worker imports the module itself. ``expert`` (``"module:function"``,
    ``(env, obs, info) -> action``) gives the env an ``expert_action()`` for the ``scripted`` baseline.
    """

    def __init__(
        self, env_id: str, kwargs: Mapping[str, Any] | None = None, expert: str | None = None
    ) -> None:
        self.env_id = env_id
        self.kwargs = dict(kwargs or {})
        self.expert = expert
        self.__name__ = env_id

    def __call__(self) -> Any:
        # In the worker: start-up time (gymnasium and the env's module load only where envs are made).
        from fastvla.utils.entry_points import ExpertAction, make_env

        env = make_env(self.env_id, self.kwargs)
        return env if self.expert is None else ExpertAction(env, self.expert)

    def __repr__(self) -> str:
        return f"EnvFactory({self.env_id!r}, {self.kwargs!r}, expert={self.expert!r})"


def is_vector_env(env: Any) -> bool:
    """Whether ``env`` is an open ``gymnasium.vector.VectorEnv``."""
    import gymnasium as gym

    return isinstance(env, gym.vector.VectorEnv)


def _vector_env_name(vec_env: Any) -> str | None:
    try:
        return getattr(vec_env.get_attr("spec")[0], "id", None)
    except Exception:
        return None


def env_groups(env: Any, env_kwargs: Mapping[str, Any] | None, expert: str | None = None) -> dict[str, Any]:
    """Normalise ``env`` (id, factory, vector env, list or dict of them) into ``{group name: env}``.

    ``env_kwargs`` and ``expert`` apply to env ids (strings) only.
    """
    if isinstance(env, Mapping):
        items = list(env.items())
    elif isinstance(env, (list, tuple)):
        items = [(None, e) for e in env]
    else:
        items = [(None, env)]
    if not items:
        raise ValueError("env is empty; pass an env id like 'fastvla/PickCube-v0', a factory, or a list")
    groups: dict[str, Any] = {}
    for i, (name, e) in enumerate(items):
        if isinstance(e, str):
            factory: Any = EnvFactory(e, env_kwargs, expert)
        elif expert is not None:
            raise ValueError(
                f"expert={expert!r} only applies to env ids; wrap your env in "
                "fastvla.utils.entry_points.ExpertAction(env, expert) instead"
            )
        elif is_vector_env(e):
            factory, name = e, name or _vector_env_name(e)
        elif callable(e):
            if env_kwargs:
                raise ValueError("env_kwargs only apply to env ids; bind them into your factory instead")
            factory = e
        else:
            raise TypeError(
                f"env {e!r} is neither an env id string, a callable returning a gymnasium.Env, "
                "nor a gymnasium.vector.VectorEnv"
            )
        name = (
            name
            or getattr(factory, "__name__", None)
            or getattr(getattr(factory, "func", None), "__name__", None)
        )
        name = name or f"env{i}"
        if name == "<lambda>":
            name = f"env{i}"
        if name in groups:
            name = f"{name}_{i}"
        groups[str(name)] = factory
    return groups


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Keep worker processes started inside the block from re-running the user's ``__main__`` script.

    With spawn/forkserver, multiprocessing re-executes the main *script* in every new process (and in the
    forkserver) so that objects defined there can be unpickled. A script without an
    ``if __name__ == "__main__":`` guard would then run its evaluation again in each worker. Env factories
    reach the workers through cloudpickle, which pickles ``__main__`` objects by value, so the re-run is not
    needed; hiding ``__main__.__file__`` while the workers start skips it. ``python -m pkg`` entry points
    (a ``__spec__`` name) are left alone. Reverted on exit.
    """
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or spec_name is not None or not hasattr(main, "__file__"):
        yield
        return
    path = main.__file__
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def make_vector_env(
    factory: Callable[[], Any], num_envs: int, vectorization: str = "auto"
) -> tuple[Any, str]:
    """A Gymnasium vector env of ``num_envs`` copies: async (forkserver/spawn) when possible, else sync.

    Args:
        factory: Callable returning one env; pickled (cloudpickle) into the worker processes.
        num_envs: Number of parallel envs.
        vectorization: ``"auto"`` (async for more than one env, falling back to sync with a warning),
            ``"async"`` (fail if the async env can't start) or ``"sync"``.

    Returns:
        ``(vector env, "async" | "sync")``.
    """
    import gymnasium as gym

    if vectorization not in ("auto", "async", "sync"):
        raise ValueError(f"vectorization={vectorization!r}; use 'auto', 'async' or 'sync'")
    if vectorization == "async" or (vectorization == "auto" and num_envs > 1):
        # GL contexts don't survive fork: workers must start from a fresh interpreter.
        context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        try:
            with _main_script_not_rerun():
                return gym.vector.AsyncVectorEnv([factory] * num_envs, context=context), "async"
        except Exception as err:
            if vectorization == "async":
                raise
            logger.warning(
                "AsyncVectorEnv failed (%s: %s); falling back to SyncVectorEnv", type(err).__name__, err
            )
    return gym.vector.SyncVectorEnv([factory] * num_envs), "sync"
