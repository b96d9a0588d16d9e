"""ObservationMap sources: where the instruction and success come from, round trips and clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from fastvla.policies import ObservationMap
from fastvla.policies.observation_map import lookup, read_instructions, read_successes


def full_map(**kw) -> ObservationMap:
    base = {
        "cameras": {"top": "sensors/rgb_top"},
        "state": "proprio",
        "instruction": "info:goal_text",
        "success": "info:solved",
        "depth": {"top": "sensors/depth_top"},
    }
    return ObservationMap(**{**base, **kw})


def test_round_trip_and_maps_saved_before_success_existed() -> None:
    m = full_map()
    assert ObservationMap.from_dict(m.to_dict()) == m
    old = {"cameras": {"front": "pixels/front"}, "state": "agent_pos", "instruction": None, "depth": {}}
    assert ObservationMap.from_dict(old).success == "info:is_success"
    with pytest.raises(ValueError, match=r"unknown ObservationMap key\(s\) \['succes'\]; valid: .*success"):
        ObservationMap.from_dict({**old, "succes": "info:solved"})


@pytest.mark.parametrize("bad", ["solved", "info:", "obs:solved", ""])
def test_bad_success_source_names_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="'info:KEY' or 'terminated'"):
        full_map(success=bad)


def test_empty_instruction_path_is_an_error() -> None:
    with pytest.raises(ValueError, match="names no key"):
        full_map(instruction="obs:")


def test_instructions_from_info_obs_fixed_text_and_default() -> None:
    obs = {"task": {"text": ("open the drawer", "close the drawer")}}
    info = {"goal_text": np.array(["a", "b"], dtype=object), "_goal_text": np.array([True, False])}
    assert read_instructions("info:goal_text", obs, info, 2) == ["a", None]  # row 1 did not set it
    assert read_instructions("obs:task/text", obs, info, 2) == ["open the drawer", "close the drawer"]
    assert read_instructions("insert the peg", obs, info, 2) == ["insert the peg"] * 2
    assert read_instructions("text:info: no prefix", obs, info, 2) == ["info: no prefix"] * 2
    assert read_instructions(None, obs, info, 2) == [None, None]  # no info["task"]: none
    assert read_instructions(None, obs, {"task": np.array(["x", "y"])}, 2) == ["x", "y"]
    nested = {"goal": {"text": np.array([b"up", b"down"]), "_text": np.array([True, True])}}
    assert read_instructions("info:goal/text", obs, nested, 2) == ["up", "down"]
    assert read_instructions("obs:task/text", {"task": {"text": "one"}}, {}, 1) == ["one"]


def test_wrong_paths_name_what_is_available() -> None:
    obs = {"sensors": {"rgb_top": np.zeros((2, 4, 4, 3))}, "proprio": np.zeros((2, 3))}
    with pytest.raises(KeyError, match=r"no key 'info:goal'.*available: \['goal_text', 'solved'\]"):
        read_instructions("info:goal", obs, {"goal_text": ["a"], "_goal_text": [True], "solved": [0]}, 1)
    with pytest.raises(KeyError, match=r"available: \['sensors/rgb_top', 'proprio'\]"):
        read_instructions("obs:sensors/text", obs, {}, 2)
    with pytest.raises(KeyError, match=r"success not in info: no key 'info:solved'; available: \['dist'\]"):
        read_successes("info:solved", {"dist": np.zeros(2)}, [False, False], 2)


def test_successes_from_info_terminated_and_the_lenient_default() -> None:
    info = {"solved": np.array([True, True]), "_solved": np.array([True, False])}
    assert read_successes("info:solved", info, [False, False], 2).tolist() == [True, False]
    assert read_successes("terminated", {}, np.array([False, True]), 2).tolist() == [False, True]
    # FastVLA's default key: an env without it (CartPole, ...) counts as failures unless strict.
    assert read_successes("info:is_success", {}, [True, True], 2).tolist() == [False, False]
    with pytest.raises(KeyError, match="is_success"):
        read_successes("info:is_success", {}, [True, True], 2, strict=True)
    m = full_map(success="terminated")
    assert m.successes({}, [True], 1).tolist() == [True]


def test_lookup_in_observation_spaces() -> None:
    space = spaces.Dict({"sensors": spaces.Dict({"rgb_top": spaces.Box(0, 255, (8, 8, 3), np.uint8)})})
    assert lookup(space, "sensors/rgb_top", "camera").shape == (8, 8, 3)
    with pytest.raises(KeyError, match=r"available: \['sensors/rgb_top'\]"):
        lookup(space, "sensors/rgb", "camera 'top'")


def test_vector_env_info_reads_through_the_map() -> None:
    from fastvla.eval.toy import ToyReachEnv

    env = gym.vector.SyncVectorEnv([lambda: ToyReachEnv(image_size=8)] * 2)
    obs, info = env.reset(seed=[0, 1])
    m = ObservationMap(cameras={"front": "pixels/front"}, instruction="info:task")
    assert m.instructions(obs, info, 2) == list(info["task"])
    obs, _, terminated, _, info = env.step(np.zeros((2, 2), np.float32))
    assert m.successes(info, terminated, 2).tolist() == info["is_success"].tolist()
    env.close()
