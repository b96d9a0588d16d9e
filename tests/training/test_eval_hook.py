"""Closed-loop evaluation inside training: render a FastVLA env between optimizer steps, in one process.

Rendering creates a Mesa GL context; a Triton import after that segfaults (shared ENVIRONMENT.md), and
PyTorch imports Triton lazily (the first AdamW step usually does it before the first evaluation; the
Trainer also preloads it whenever a hook is set). Training runs in a subprocess so a regression shows up
as a failed test (exit code -11) instead of killing the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = """
import json, sys
from fastvla.training import DataConfig, TrainConfig
from fastvla.eval.hooks import closed_loop_eval_hook
from fastvla.training.loop import Trainer

root, out = sys.argv[1:3]
cfg = TrainConfig(
    data=DataConfig(root=root, val_fraction=0, num_workers=0),
    output_dir=out, steps=3, batch_size=4, eval_every=1, log_every=1, val_every=0,
    progress=False, tensorboard=False,
)
hook = closed_loop_eval_hook("fastvla/ReachCube-v0", n_episodes=1, max_steps=3, env_kwargs={"image_size": 64})
trainer = Trainer(cfg, eval_hook=hook)
trainer.fit()
print("EVAL " + json.dumps([h for h in trainer.history if "eval/success_rate" in h]))
"""


@pytest.mark.slow
def test_eval_hook_renders_between_optimizer_steps(tmp_path: Path) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    record = [
        sys.executable, "-m", "fastvla", "record", "--env", "fastvla/ReachCube-v0", "--episodes", "2",
        "--out", str(tmp_path / "data"), "--image-size", "64", "--num-envs", "1", "--cameras", "front,wrist",
    ]  # fmt: skip
    subprocess.run(record, cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "driver.py").write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "data"), str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    line = next(x for x in result.stdout.splitlines() if x.startswith("EVAL "))
    evals = json.loads(line[len("EVAL ") :])
    assert [e["step"] for e in evals] == [1, 2, 3]
    assert all(0.0 <= e["eval/success_rate"] <= 1.0 for e in evals)
    assert (tmp_path / "run" / "eval" / "step_00000003" / "eval_info.json").is_file()
