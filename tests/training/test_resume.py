"""kill -9 in the middle of a run, then --resume: the weights end up equal to an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastvla.training import checkpoint as ckpt

STEPS, SAVE_EVERY = 10, 3


def _command(dataset_root: Path, frame_cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fastvla", "train",
        "--data.root", str(dataset_root),
        "--data.cache-dir", str(frame_cache),
        "--output-dir", str(out),
        "--steps", str(STEPS),
        "--save-every", str(SAVE_EVERY),
        "--keep-checkpoints", "0",
        "--batch-size", "8",  # 9 batches per epoch: the run crosses an epoch boundary
        "--data.val-fraction", "0",
        "--val-every", "0",
        "--log-every", "100",
        "--optim.warmup-steps", "2",
        "--data.augment",  # random augmentation in the main process: the RNG state must resume too
        "--data.num-workers", "0",
        "--no-progress",
        "--no-tensorboard",
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    # Same thread count in every run: CPU reductions are reproducible for a fixed thread count. One thread:
    # the reference and the interrupted run train at the same time, and two 2-thread torch processes on
    # 2 cores oversubscribe OpenMP (minutes instead of seconds).
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(ckpt.checkpoint_path(out, step) / ckpt.MODEL_FILE)


@pytest.mark.slow
def test_kill_then_resume_matches_uninterrupted_run(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    cwd = tmp_path  # not the repo root (its datasets/ folder would shadow Hugging Face's)

    # The uninterrupted reference run goes alongside the one that gets killed.
    def start(out: Path, stderr: int) -> subprocess.Popen:
        command = _command(dataset_root, frame_cache, out)
        return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)

    ref = start(reference, subprocess.PIPE)
    proc = start(interrupted, subprocess.DEVNULL)
    first = ckpt.checkpoint_path(interrupted, SAVE_EVERY)
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [step for step, _ in ckpt.list_checkpoints(interrupted)]
    assert done and STEPS not in done, f"kill did not land mid-run (checkpoints: {done})"
    assert ref.wait() == 0, ref.stderr.read().decode()[-3000:]
    # Whatever the kill interrupted, every checkpoint folder is complete and readable.
    for name in (interrupted / ckpt.CHECKPOINTS).iterdir():
        if not name.name.startswith("."):
            assert all((name / f).is_file() for f in ckpt._REQUIRED), f"half-written checkpoint {name}"
            load_file(name / ckpt.MODEL_FILE)

    result = subprocess.run(
        _command(dataset_root, frame_cache, interrupted, "--resume"),
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {ckpt.checkpoint_path(interrupted, done[-1])}" in result.stdout
    assert not list((interrupted / ckpt.CHECKPOINTS).glob(".step_*")), (
        "stale temporary folders were not removed"
    )

    expected, got = _weights(reference, STEPS), _weights(interrupted, STEPS)
    assert expected.keys() == got.keys()
    unequal = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not unequal, f"{len(unequal)} tensors differ, e.g. {unequal[:3]}"
    # ...and training did move the weights (the equality is not between two untouched models).
    assert any(not torch.equal(_weights(reference, SAVE_EVERY)[n], expected[n]) for n in expected)


def test_resume_with_other_batch_size_is_refused(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    from fastvla.training import DataConfig, TrainConfig
    from fastvla.training.loop import Trainer

    def config(batch_size: int, **kw) -> TrainConfig:
        data = DataConfig(root=str(dataset_root), cache_dir=str(frame_cache), val_fraction=0, num_workers=0)
        return TrainConfig(
            data=data, output_dir=str(tmp_path), steps=1, batch_size=batch_size, progress=False, **kw
        )

    Trainer(config(4)).fit()
    with pytest.raises(ValueError, match="batch_size: checkpoint 4 vs now 8"):
        Trainer(config(8, resume=True))
