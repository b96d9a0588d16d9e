"""User mistakes on the command line: one line ``fastvla <cmd>: error: ...``, exit 2; bugs keep tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastvla.cli import main
from fastvla.errors import format_user_error


def _fastvla(*args: str, cwd: Path, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FASTVLA_DEBUG", None)
    if debug:
        env["FASTVLA_DEBUG"] = "1"
    # cwd: not the repo root, whose datasets/ folder would shadow Hugging Face's.
    command = [sys.executable, "-m", "fastvla", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith(f"fastvla {command}: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_missing_dataset_through_the_console_entry_point(tmp_path: Path) -> None:
    result = _fastvla("dataset", "info", "/does/not/exist", cwd=tmp_path)
    assert result.returncode == 2
    line = _one_error_line(result.stderr, "dataset")
    assert "/does/not/exist is not a LeRobot dataset root" in line


def test_debug_env_shows_the_traceback(tmp_path: Path) -> None:
    result = _fastvla("dataset", "info", "/does/not/exist", cwd=tmp_path, debug=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "DatasetFormatError" in result.stderr


@pytest.mark.parametrize(
    ("argv", "command", "expected"),
    [
        (["dataset", "info", "/does/not/exist"], "dataset", "/does/not/exist/meta/info.json not found"),
        (["train", "--data.root", "/nope", "--output-dir", "{tmp}/run"], "train", "/nope is not a LeRobot"),
        (["train", "--data.root", "/nope", "--steps", "0"], "train", "steps must be >= 1, got 0"),
        (
            ["eval", "--policy", "/nope", "--env", "fastvla/PickCube-v0", "--out", "{tmp}/eval"],
            "eval",
            "policy '/nope' is not a baseline",
        ),
        (
            [
                "eval",
                "--policy",
                "random",
                "--env",
                "fastvla/PickCube-v0",
                "--out",
                "{tmp}/e",
                "--episodes",
                "0",
            ],
            "eval",
            "n_episodes=0 (--episodes); must be >= 1",
        ),
    ],
    ids=["dataset-info", "train-data-root", "train-steps", "eval-policy", "eval-episodes"],
)
def test_user_errors_are_one_line_and_exit_2(
    argv: list[str], command: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert expected in line


def test_debug_flag_before_or_after_the_command_reraises(tmp_path: Path) -> None:
    from fastvla.datasets.metadata import DatasetFormatError

    with pytest.raises(DatasetFormatError):
        main(["--debug", "dataset", "info", "/does/not/exist"])
    with pytest.raises(DatasetFormatError):
        main(["dataset", "info", "/does/not/exist", "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["eval", "--policy", "/nope", "--env", "x", "--out", str(tmp_path), "--debug"])


def test_bugs_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastvla.datasets.viewer as viewer

    def broken(root):
        raise RuntimeError("a bug in the viewer")

    monkeypatch.setattr(viewer, "summary", broken)
    with pytest.raises(RuntimeError, match="a bug in the viewer"):
        main(["dataset", "info", str(tmp_path)])


def test_messages_are_one_line_without_python_decoration() -> None:
    assert format_user_error(KeyError("camera 'top' not in observation")) == "camera 'top' not in observation"
    assert format_user_error(FileNotFoundError(2, "No such file or directory", "/x")) == (
        "No such file or directory: /x"
    )
    assert format_user_error(ValueError("first line\n  second line")) == "first line second line"
