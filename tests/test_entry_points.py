"""Envs and experts named on the command line: registered ids, module:Class, module:EnvId, file paths."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from fastvla.utils.entry_points import ExpertAction, import_module, load_entry_point, make_env

USER_MODULE = """
import gymnasium as gym
from fastvla.eval.toy import ToyReachEnv

gym.register("FastvlaTmpReach-v0", entry_point=ToyReachEnv, max_episode_steps=7)


class Small(ToyReachEnv):
    def __init__(self, size=8):
        super().__init__(image_size=size)


def go(env, obs, info):
    return env.unwrapped.expert_action()
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with ``fv_user_envs.py`` as the current directory; sys.path, modules, registry restored."""
    (tmp_path / "fv_user_envs.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("fv_user_envs", None)
    gym.registry.pop("FastvlaTmpReach-v0", None)


def test_registered_id_and_module_class() -> None:
    assert make_env("CartPole-v1").spec.id == "CartPole-v1"
    env = make_env("fastvla.eval.toy:ToyReachEnv", {"image_size": 8, "max_episode_steps": 3})
    assert env.spec.max_episode_steps == 3 and env.unwrapped.image_size == 8
    obs, _ = env.reset(seed=0)
    assert obs["pixels"]["front"].shape == (8, 8, 3)


def test_module_from_the_current_directory_and_gymnasium_module_id(user_dir: Path) -> None:
    assert "fv_user_envs" not in sys.modules
    env = make_env("fv_user_envs:Small", {"size": 4})  # not on sys.path: found in the current directory
    assert env.unwrapped.image_size == 4 and str(user_dir) in sys.path
    registered = make_env("fv_user_envs:FastvlaTmpReach-v0")  # importing the module registered the id
    assert registered.spec.max_episode_steps == 7


def test_file_path_entry_points_import_once(user_dir: Path) -> None:
    env = make_env(f"{user_dir / 'fv_user_envs.py'}:Small")
    assert load_entry_point("fv_user_envs.py:go", "expert") is import_module("fv_user_envs.py").go
    assert type(env.unwrapped).__module__ == "fv_user_envs"


def test_errors_name_the_fix(user_dir: Path) -> None:
    with pytest.raises(KeyError, match=r"no Gymnasium id 'Big'.*public names: \[.*'Small'"):
        make_env("fv_user_envs:Big")
    with pytest.raises(KeyError, match=r"has no attribute 'stop'; it has \[.*'go'"):
        load_entry_point("fv_user_envs:stop", "expert")
    with pytest.raises(ModuleNotFoundError, match="PYTHONPATH"):
        make_env("fv_no_such_module:Env")
    with pytest.raises(ValueError, match="not 'module:attribute'"):
        load_entry_point("fv_user_envs", "expert")
    with pytest.raises(FileNotFoundError, match="no Python file"):
        make_env("missing/envs.py:Env")


def test_expert_action_wrapper_calls_the_expert_with_the_latest_step(user_dir: Path) -> None:
    seen: list[tuple] = []

    def expert(env, obs, info):
        seen.append((env, obs, info))
        return env.unwrapped.expert_action()

    env = make_env("fastvla.eval.toy:ToyReachEnv", {"image_size": 8})
    wrapped = ExpertAction(env, expert)
    with pytest.raises(RuntimeError, match="before reset"):
        wrapped.expert_action()
    obs, info = wrapped.reset(seed=0)
    action = wrapped.expert_action()
    assert seen[-1][0] is env and seen[-1][2] is info
    obs, *_, info = wrapped.step(action)
    np.testing.assert_array_equal(wrapped.expert_action(), env.unwrapped.expert_action())
    assert seen[-1][1] is obs and seen[-1][2] is info
    by_name = ExpertAction(make_env("fv_user_envs:Small"), "fv_user_envs:go")
    by_name.reset(seed=1)
    assert by_name.expert_action().shape == (2,)
    with pytest.raises(TypeError, match="not callable"):
        ExpertAction(env, "fastvla.eval.toy:COLORS")
