"""End to end: `fastvla demo` records, QLoRA-fine-tunes the shipped base, scores base/fp32/NF4, resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--episodes", "4", "--steps", "3", "--batch-size", "8", "--eval-episodes", "2"]
    cmd = [sys.executable, "-m", "fastvla", "demo", "--out", str(out), *args, *extra]
    # A subprocess: the demo renders (GL) and trains in one process, as `make demo` does.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=out.parent)


def test_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stderr[-3000:]

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["recorded"]["episodes"] == 4
    assert set(summary["success"]) == {"base", "fp32", "nf4"}
    assert summary["config"]["base"].endswith("sim-base")
    for label in ("base", "fp32", "nf4"):
        info = json.loads((out / f"eval_{label}" / "eval_info.json").read_text())
        assert info["overall"]["n_episodes"] == 2
        assert 0.0 <= summary["success"][label] <= 1.0
        assert (out / f"eval_{label}" / "report.md").exists()
        assert list((out / f"eval_{label}" / "videos").rglob("*.mp4")), f"no {label} video written"
    policy = json.loads((Path(summary["policy_dir"]) / "policy_config.json").read_text())
    assert policy["trained_with_quantization"] == "4bit"  # the QLoRA path, not a from-scratch run
    assert policy["merged_into"] == "full-precision checkpoint"
    for row in ("| base (before fine-tuning) |", "| fine-tuned, fp32 (merged) |", "| fine-tuned, NF4 |"):
        assert row in first.stdout, first.stdout[-2000:]
    # The recorded instructions name the held-out colour only.
    tasks = (out / "dataset" / "meta" / "tasks.parquet").read_bytes()
    assert b"purple" in tasks and b"red cube" not in tasks

    # Second run: the dataset is reused and training resumes from the final checkpoint (no retraining).
    second = _demo(out, "--skip-4bit")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing 4 recorded episodes" in second.stdout
