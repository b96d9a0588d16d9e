"""Evaluation on the FastVLA MuJoCo tasks: baselines and the ``fastvla eval`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fastvla.envs  # noqa: F401  (registers the ids)
from fastvla.eval import evaluate
from fastvla.eval.video import count_frames

ENV = "fastvla/ReachCube-v0"
SMALL = {"image_size": 48}


def test_scripted_beats_random_on_reach_cube() -> None:
    kw = dict(n_episodes=4, batch_size=2, seed=0, env_kwargs=SMALL, progress=False, vectorization="sync")
    scripted = evaluate("scripted", ENV, **kw)
    rand = evaluate("random", ENV, **kw)
    assert scripted.success_rate >= 0.75
    assert rand.success_rate <= 0.25
    assert scripted.success_rate > rand.success_rate
    assert all(e.task for e in scripted.episodes)  # the instruction comes from info["task"]


def test_cli_writes_results_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastvla.cli import main

    out = tmp_path / "eval"
    argv = ["eval", "--policy", "scripted", "--env", ENV, "--episodes", "3", "--batch-size", "2",
            "--seed", "5", "--out", str(out), "--max-videos", "1", "--env-kwargs", json.dumps(SMALL),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "eval_info.json" in printed
    info = json.loads((out / "eval_info.json").read_text())
    assert info["meta"]["config"]["policy"] == "scripted"
    assert info["meta"]["config"]["env_kwargs"] == SMALL
    assert [e["seed"] for e in info["per_episode"]] == [5, 6, 7]
    assert info["overall"]["n_episodes"] == 3
    (video,) = info["overall"]["video_paths"]
    assert count_frames(out / video) == info["per_episode"][0]["length"] + 1
    assert (out / "report.md").is_file()


def test_cli_rejects_bad_env_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastvla.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--policy", "random", "--env", ENV, "--out", str(tmp_path), "--env-kwargs", "{bad"])
    assert "not valid JSON" in capsys.readouterr().err
