"""Bring your own env (docs/custom_envs.md): record -> train -> evaluate the example env through the CLI.

``examples/custom_env/point_env.py`` keeps its image at ``obs["sensors"]["rgb_top"]``, its state at
``obs["proprio"]``, the instruction in ``info["goal_text"]`` and success in ``info["solved"]``; the commands
run from that folder, as a user would run them from their project (``point_env`` is importable from the
current directory, not installed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fastvla.cli import main
from fastvla.datasets import LeRobotDataset
from fastvla.eval.video import count_frames

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_env"
OBS_MAP = {
    "cameras": {"top": "sensors/rgb_top"},
    "state": "proprio",
    "instruction": "info:goal_text",
    "success": "info:solved",
}


@pytest.fixture
def in_example_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from examples/custom_env; sys.path and the imported example module are restored afterwards."""
    monkeypatch.chdir(EXAMPLE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield EXAMPLE
    sys.modules.pop("point_env", None)


def _record(out: Path, *extra: str) -> int:
    return main(
        ["record", "--env", "point_env:PointEnv", "--expert", "point_env:expert",
         "--obs-map", json.dumps(OBS_MAP), "--env-kwargs", '{"image_size": 32}', "--out", str(out), *extra]
    )  # fmt: skip


def test_record_train_eval_with_videos(in_example_dir: Path, tmp_path: Path) -> None:
    data, run, evals = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    assert _record(data, "--episodes", "6", "--num-envs", "2") == 0  # async workers import point_env too

    ds = LeRobotDataset(data)
    assert ds.num_episodes == 6
    features = ds.meta.features
    assert features["observation.images.top"]["shape"] == [32, 32, 3]
    assert features["observation.state"]["shape"] == [4] and features["action"]["shape"] == [2]
    assert not [k for k in features if k.startswith("observation.images.") and k != "observation.images.top"]
    assert all(t.startswith("go to the ") and t.endswith(" square") for t in ds.meta.tasks)
    item = ds[0]
    assert item["task"].startswith("go to the ")
    assert np.abs(item["action"].numpy()).max() <= 1.0

    train = ["train", "--data.root", str(data), "--model.preset", "tiny", "--steps", "6", "--batch-size", "8",
             "--output-dir", str(run), "--data.num-workers", "0", "--no-progress"]  # fmt: skip
    assert main(train) == 0
    policy_config = json.loads((run / "policy" / "policy_config.json").read_text())
    assert policy_config["obs_map"] == {**OBS_MAP, "depth": {}}  # the recorded map travels with the policy

    # No --obs-map: the policy knows where this env keeps its camera, state, instruction and success.
    evaluate = ["eval", "--policy", str(run / "policy"), "--env", "point_env:PointEnv", "--episodes", "3",
                "--batch-size", "1", "--max-videos", "2", "--env-kwargs", '{"image_size": 32}',
                "--out", str(evals), "--no-progress"]  # fmt: skip
    assert main(evaluate) == 0
    info = json.loads((evals / "eval_info.json").read_text())
    episodes = info["per_episode"]
    assert [e["seed"] for e in episodes] == [0, 1, 2]
    assert all(e["task"].startswith("go to the ") for e in episodes)
    assert info["meta"]["config"]["success"] == "info:solved"
    video = evals / episodes[0]["video_path"]
    assert video.is_file() and count_frames(video) == episodes[0]["length"] + 1
    assert len(list((evals / "videos").rglob("*.mp4"))) == 2


def test_eval_baseline_with_obs_map_flags(in_example_dir: Path, tmp_path: Path) -> None:
    argv = ["eval", "--policy", "random", "--env", "point_env.py:PointEnv", "--episodes", "2",
            "--no-progress", "--obs-map", json.dumps({**OBS_MAP, "success": "info:is_success"}),
            "--success", "info:solved",
            "--env-kwargs", '{"image_size": 16, "max_steps": 3}', "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert info["meta"]["config"]["success"] == "info:solved"  # the flag beats the map
    assert all(e["task"].startswith("go to the ") and e["length"] == 3 for e in info["per_episode"])
    assert info["meta"]["config"]["video_obs_paths"] == ["sensors/rgb_top"]


def test_scripted_baseline_with_an_expert_function(in_example_dir: Path, tmp_path: Path) -> None:
    argv = ["eval", "--policy", "scripted", "--env", "point_env:PointEnv", "--expert", "point_env:expert",
            "--episodes", "4", "--batch-size", "2", "--no-progress", "--obs-map", json.dumps(OBS_MAP),
            "--env-kwargs", '{"image_size": 16}', "--max-videos", "0", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0  # batch 2: async workers build the expert wrapper from its entry point
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert info["meta"]["config"]["expert"] == "point_env:expert"
    assert [e["success"] for e in info["per_episode"]] == [True] * 4  # the expert solves the example env
    assert main([*argv[:5], "--expert", "point_env", *argv[7:]]) == 2  # not module:function


def test_wrong_paths_and_missing_expert_are_clear_errors(
    in_example_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad_map = json.dumps({**OBS_MAP, "cameras": {"top": "sensors/rgb"}})
    argv = ["record", "--env", "point_env:PointEnv", "--expert", "point_env:expert", "--episodes", "1",
            "--num-envs", "1", "--obs-map", bad_map, "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(argv) == 2
    assert "no key 'sensors/rgb'; available: ['proprio', 'sensors/rgb_top']" in capsys.readouterr().err
    no_expert = ["record", "--env", "point_env:PointEnv", "--episodes", "1", "--num-envs", "1",
                 "--obs-map", json.dumps(OBS_MAP), "--out", str(tmp_path / "b")]  # fmt: skip
    assert main(no_expert) == 2
    assert "the env has no expert_action()" in capsys.readouterr().err
    bad_success = json.dumps({**OBS_MAP, "success": "info:success"})
    argv = ["record", "--env", "point_env:PointEnv", "--expert", "point_env:expert", "--episodes", "1",
            "--num-envs", "1", "--obs-map", bad_success, "--out", str(tmp_path / "c")]  # fmt: skip
    assert main(argv) == 2
    assert "no key 'info:success'; available: ['goal_text', 'solved']" in capsys.readouterr().err
    fastvla_only = [*argv[:-4], "--obs-map", json.dumps(OBS_MAP), "--image-size", "64", "--out", "d"]
    assert main(fastvla_only) == 2
    assert "['--image-size'] configure FastVLA envs" in capsys.readouterr().err
