"""The tasks' constructor arguments: thresholds and weights do what they say, bad values raise, docs agree."""

from __future__ import annotations

import ast
import importlib
import inspect
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest

import fastvla.envs  # noqa: F401  (registers the ids)
from fastvla.envs import TASKS
from fastvla.envs.base import TabletopEnv

SMALL = {"image_size": 16, "cameras": ("front",)}


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**SMALL, **kwargs})


def task_class(env_id: str) -> type[TabletopEnv]:
    module, name = TASKS[env_id][0].split(":")
    return getattr(importlib.import_module(module), name)


def expert_episode(env: gym.Env, seed: int, steps: int) -> list[dict]:
    """Infos of ``steps`` expert steps (the env must not terminate on success)."""
    env.reset(seed=seed)
    infos = []
    for _ in range(steps):
        *_, info = env.step(env.unwrapped.expert_action())
        infos.append(info)
    return infos


def test_reach_success_radius_moves_the_success_line():
    """The expert hovers 2.5 cm above the cube: a 2 cm radius is never met, wider radii are met sooner."""
    first_success = {}
    for radius in (0.02, 0.05, 0.1):
        env = make("fastvla/ReachCube-v0", success_radius=radius, terminate_on_success=False)
        infos = expert_episode(env, seed=0, steps=15)
        env.close()
        for info in infos:
            assert info["is_success"] == (info["reach_distance"] < radius)
        hits = [i for i, info in enumerate(infos) if info["is_success"]]
        first_success[radius] = hits[0] if hits else None
    assert first_success[0.02] is None
    assert first_success[0.05] is not None and first_success[0.1] is not None
    assert first_success[0.1] < first_success[0.05]


def test_pick_lift_height_sets_success_and_lift_reward():
    low = make("fastvla/PickCube-v0", lift_height=0.02, terminate_on_success=False)
    high = make("fastvla/PickCube-v0", lift_height=0.5, terminate_on_success=False)
    for info_low, info_high in zip(expert_episode(low, 0, 30), expert_episode(high, 0, 30)):
        # Same seed, same expert: the trajectories agree, only the success line and lift scale differ.
        assert info_low["lift_height"] == pytest.approx(info_high["lift_height"])
        grasped = info_low["reward_grasp"] > 0
        assert info_low["is_success"] == (grasped and info_low["lift_height"] > 0.02)
        assert not info_high["is_success"]  # the expert lifts the cube ~17 cm, never 50 cm
        expected = float(np.clip(info_high["lift_height"] / 0.5, 0, 1)) if grasped else 0.0
        assert info_high["reward_lift"] == pytest.approx(expected)
    assert info_low["is_success"]
    low.close()
    high.close()


def test_push_success_radius_and_zone_distance_range():
    env = make("fastvla/PushCube-v0", success_radius=0.01, push_distance=(0.12, 0.12), num_distractors=0)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        assert info["zone_distance"] == pytest.approx(0.12, abs=2e-3)  # cube settles a little
        assert info["is_success"] == (info["zone_distance"] < 0.01)
    env.close()


def test_reward_weights_scale_their_terms():
    plain = make("fastvla/StackCube-v0", terminate_on_success=False)
    weighted = make(
        "fastvla/StackCube-v0",
        terminate_on_success=False,
        reward_reach_weight=2.0,
        reward_grasp_weight=0.0,
        reward_align_weight=-1.0,
        reward_success_weight=10.0,
    )
    weights = {"reward_reach": 2.0, "reward_grasp": 0.0, "reward_align": -1.0, "reward_success": 10.0}
    for env in (plain, weighted):
        env.reset(seed=1)
    for _ in range(12):
        action = plain.unwrapped.expert_action()
        weighted.unwrapped.expert_action()  # keep both experts' phases in step
        _, r_plain, *_, info_plain = plain.step(action)
        _, r_weighted, *_, info_weighted = weighted.step(action)
        for term, weight in weights.items():
            assert info_weighted[term] == pytest.approx(weight * info_plain[term])
        assert r_plain == pytest.approx(sum(v for k, v in info_plain.items() if k.startswith("reward_")))
        assert r_weighted == pytest.approx(sum(weights[k] * info_plain[k] for k in weights))
    plain.close()
    weighted.close()


def test_distance_reward_scale_and_spawn_region():
    env = make(
        "fastvla/ReachCube-v0",
        distance_reward_scale=1.0,
        spawn_low=(0.45, -0.05),
        spawn_high=(0.55, 0.05),
        num_distractors=0,
    )
    _, info = env.reset(seed=0)
    assert info["reward_reach"] == pytest.approx(1 - np.tanh(info["reach_distance"]))
    for seed in range(5):
        env.reset(seed=seed)
        xy = env.unwrapped.physics.cube_pos(0)[:2]
        assert np.all(xy >= np.array([0.45, -0.05]) - 1e-3) and np.all(xy <= np.array([0.55, 0.05]) + 1e-3)
    env.close()


BAD_ARGUMENTS = [
    ("fastvla/ReachCube-v0", {"success_radius": -0.1}, "success_radius=-0.1"),
    ("fastvla/ReachCube-v0", {"success_radius": 0}, "success_radius=0"),
    ("fastvla/ReachCube-v0", {"success_radius": float("nan")}, "success_radius=nan"),
    ("fastvla/ReachCube-v0", {"success_radius": "wide"}, "success_radius='wide'"),
    ("fastvla/ReachCube-v0", {"success_radius": True}, "success_radius=True"),
    ("fastvla/ReachCube-v0", {"reward_reach_weight": float("inf")}, "reward_reach_weight=inf"),
    ("fastvla/ReachCube-v0", {"distance_reward_scale": -5}, "distance_reward_scale=-5"),
    ("fastvla/ReachCube-v0", {"min_separation": 0.0}, "min_separation=0.0"),
    ("fastvla/ReachCube-v0", {"ee_pos_scale": None}, "ee_pos_scale=None"),
    ("fastvla/ReachCube-v0", {"spawn_low": (0.1, -0.18)}, r"spawn region \(0.1, -0.18\)"),
    ("fastvla/ReachCube-v0", {"spawn_low": (0.7, 0.0)}, "spawn_low must be below spawn_high"),
    ("fastvla/ReachCube-v0", {"spawn_high": 0.5}, "spawn_high=0.5"),
    ("fastvla/PickCube-v0", {"lift_height": 0.0}, "lift_height=0.0"),
    ("fastvla/PickCube-v0", {"reward_lift_weight": "x"}, "reward_lift_weight='x'"),
    ("fastvla/PlaceCube-v0", {"zone_radius": -1}, "zone_radius=-1"),
    ("fastvla/PlaceCube-v0", {"rest_tolerance": 0}, "rest_tolerance=0"),
    ("fastvla/PushCube-v0", {"push_distance": (0.2, 0.1)}, r"push_distance=\(0.2, 0.1\) has low > high"),
    ("fastvla/PushCube-v0", {"push_distance": 0.1}, "push_distance=0.1 must be a"),
    ("fastvla/PushCube-v0", {"push_distance": (1.0, 1.2)}, "beyond the spawn region's diagonal"),
    ("fastvla/StackCube-v0", {"xy_tolerance": -0.02}, "xy_tolerance=-0.02"),
    ("fastvla/StackCube-v0", {"z_tolerance": float("nan")}, "z_tolerance=nan"),
]


@pytest.mark.parametrize(("env_id", "kwargs", "match"), BAD_ARGUMENTS)
def test_invalid_argument_values_raise_naming_the_value(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(env_id, **kwargs)


@pytest.mark.parametrize(
    ("env_id", "name"),
    [
        ("fastvla/ReachCube-v0", "succes_radius"),
        ("fastvla/ReachCube-v0", "lift_height"),  # another task's argument
        ("fastvla/PushCube-v0", "xy_tolerance"),
    ],
)
def test_unknown_arguments_raise(env_id, name):
    with pytest.raises(TypeError, match=name):
        make(env_id, **{name: 0.1})


def test_unsatisfiable_place_layout_raises_at_reset():
    env = make("fastvla/PlaceCube-v0", zone_clearance=1.0)
    with pytest.raises(RuntimeError, match=r"zone_clearance=1\.0"):
        env.reset(seed=0)
    env.close()


NON_DEFAULT = {
    "fastvla/ReachCube-v0": {"success_radius": 0.03},
    "fastvla/PickCube-v0": {"lift_height": 0.04, "reward_grasp_weight": 0.5, "reward_lift_weight": 2.0},
    "fastvla/PlaceCube-v0": {"zone_radius": 0.07, "zone_clearance": 0.12, "reward_place_weight": 3.0},
    "fastvla/PushCube-v0": {"success_radius": 0.03, "push_distance": (0.12, 0.15), "reward_push_weight": 2.0},
    "fastvla/StackCube-v0": {"xy_tolerance": 0.015, "z_tolerance": 0.006, "reward_align_weight": 0.5},
}


@pytest.mark.parametrize("env_id", list(TASKS))
def test_pickled_env_keeps_every_argument(env_id):
    """EzPickle rebuilds the env with all its arguments (as an async vector env's worker does)."""
    kwargs = {**NON_DEFAULT[env_id], "min_separation": 0.09, "reward_success_weight": 5.0}
    env = make(env_id, **kwargs).unwrapped
    clone = pickle.loads(pickle.dumps(env))
    for name, value in kwargs.items():
        expected = tuple(value) if isinstance(value, tuple) else value
        assert getattr(clone, name) == expected, name
    _, info_a = env.reset(seed=4)
    _, info_b = clone.reset(seed=4)
    assert info_a == info_b
    env.close()
    clone.close()


def _table(doc: str) -> dict[str, str]:
    """``{parameter: default cell}`` of the ``## Arguments`` table in a Gymnasium-style docstring."""
    section = doc.split("## Arguments", 1)[1].split("## ", 1)[0]
    rows = re.findall(r"^\s*\| `(\w+)` \| [^|]+ \| `([^`]*)` \|", section, flags=re.MULTILINE)
    return dict(rows)


@pytest.mark.parametrize("env_id", list(TASKS))
def test_arguments_table_lists_every_task_argument_with_its_default(env_id):
    cls = task_class(env_id)
    table = _table(cls.__doc__)
    base = inspect.signature(TabletopEnv.__init__).parameters
    own = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name not in ("self", "kwargs")]
    assert own, f"{cls.__name__} has no task arguments"
    for param in own:
        assert param.name in table, f"{cls.__name__}: `{param.name}` missing from the Arguments table"
    for name, cell in table.items():
        if name == "num_distractors":
            default = cls.default_distractors
        else:
            params = inspect.signature(cls.__init__).parameters
            default = (params[name] if name in params else base[name]).default
        assert ast.literal_eval(cell) == default, (
            f"{cls.__name__}.{name}: table says {cell}, code {default!r}"
        )
    base_doc = TabletopEnv.__doc__
    for name in base:
        if name not in ("self", *table):
            assert f"{name}:" in base_doc, f"TabletopEnv docstring does not document {name}"
