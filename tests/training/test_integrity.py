"""Hardening of training runs: damaged checkpoints are skipped on resume, and divergence stops the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastvla.errors import CheckpointError, NonFiniteError
from fastvla.training import DataConfig, TrainConfig, factory
from fastvla.training import checkpoint as ckpt
from fastvla.training.loop import Trainer


def _config(root: Path, out: Path, **kwargs) -> TrainConfig:
    data = DataConfig(root=str(root), image_size=32, val_fraction=0, num_workers=0, chunk_size=4)
    base = {"data": data, "output_dir": str(out), "steps": 4, "batch_size": 4, "save_every": 2}
    base.update(log_every=100, val_every=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kwargs})


def test_resume_skips_a_damaged_newest_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    Trainer(_config(tiny_dataset, tmp_path)).fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]
    newest = ckpt.checkpoint_path(tmp_path, 4)
    expected = load_file(newest / ckpt.MODEL_FILE)
    data = (newest / "optimizer.pt").read_bytes()
    (newest / "optimizer.pt").write_bytes(data[: len(data) // 3])  # a copy that stopped part-way

    with pytest.warns(
        ckpt.CorruptCheckpointWarning, match=r"skipping checkpoint step_00000004.*optimizer\.pt"
    ):
        trainer = Trainer(_config(tiny_dataset, tmp_path, resume=True))
    assert trainer.step == 2  # continues from the previous complete checkpoint
    trainer.fit()
    # Updates 3 and 4 are replayed exactly, and step_00000004 is written again, whole this time.
    again = ckpt.read_checkpoint(newest)
    assert again.trainer_state["step"] == 4
    assert expected.keys() == again.tensors.keys()
    assert all(torch.equal(expected[k], again.tensors[k]) for k in expected)


def test_resume_without_a_usable_checkpoint_is_a_clear_error(tiny_dataset: Path, tmp_path: Path) -> None:
    Trainer(_config(tiny_dataset, tmp_path)).fit()
    for _, path in ckpt.list_checkpoints(tmp_path):
        (path / ckpt.STATE_FILE).write_text("")
    with (
        pytest.warns(ckpt.CorruptCheckpointWarning),
        pytest.raises(CheckpointError, match=r"no usable checkpoint .*trainer_state\.json: 0 bytes"),
    ):
        Trainer(_config(tiny_dataset, tmp_path, resume=True))


class _Diverging(Trainer):
    """Reports a NaN loss for update ``nan_at`` (1-based), or sets a weight to inf during ``inf_at``."""

    nan_at = inf_at = -1

    def _update(self, batches):
        loss = super()._update(batches)
        return self._poison(loss)

    def _graphed_update(self, batches):
        loss, grad_norm = super()._graphed_update(batches)
        return self._poison(loss), grad_norm

    def _poison(self, loss: torch.Tensor) -> torch.Tensor:
        if self.step + 1 == self.inf_at:
            with torch.no_grad():
                next(p for p in self.model.parameters() if p.requires_grad).view(-1)[0] = float("inf")
        return loss * float("nan") if self.step + 1 == self.nan_at else loss


def _assert_nothing_nonfinite_written(out: Path, steps: list[int]) -> None:
    assert [s for s, _ in ckpt.list_checkpoints(out)] == steps
    for _, path in ckpt.list_checkpoints(out):
        ckpt.read_checkpoint(path)  # finite weights, or this raises
    assert not (out / "policy").exists(), "a diverged policy was exported"


def test_nonfinite_loss_stops_at_that_update_on_cpu(tiny_dataset: Path, tmp_path: Path) -> None:
    trainer = _Diverging(_config(tiny_dataset, tmp_path, steps=6))
    trainer.nan_at = 3
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    assert trainer.step == 3  # one CPU process: checked every update
    message = str(info.value)
    assert "the loss was nan at update 3" in message
    assert str(ckpt.checkpoint_path(tmp_path, 2)) in message and "--optim.lr" in message
    _assert_nothing_nonfinite_written(tmp_path, [2])


def test_nonfinite_weights_after_the_last_update_are_never_saved(tiny_dataset: Path, tmp_path: Path) -> None:
    trainer = _Diverging(_config(tiny_dataset, tmp_path, steps=3))
    trainer.inf_at = 3  # the loss of update 3 is still finite; the weights are not
    with pytest.raises(NonFiniteError, match=r"trainable weights hold NaN/inf values after update 3 \("):
        trainer.fit()
    _assert_nothing_nonfinite_written(tmp_path, [2])


def test_graphed_path_checks_only_at_log_and_save_boundaries(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The graphed update on CPU: capture fails, GraphedTrainStep runs the same sequence eagerly.
    monkeypatch.setattr(factory, "use_cuda_graphs", lambda cfg, device: (True, False))
    trainer = _Diverging(_config(tiny_dataset, tmp_path, steps=8, log_every=4, save_every=2))
    trainer.nan_at = 3
    checks = []
    real_check = trainer.check_finite
    monkeypatch.setattr(trainer, "check_finite", lambda **kw: (checks.append(trainer.step), real_check(**kw)))
    with (
        pytest.warns(UserWarning, match="continuing without CUDA graphs"),
        pytest.raises(NonFiniteError) as info,
    ):
        trainer.fit()
    assert trainer.graphed is not None and not trainer.graphed.captured
    assert checks == [2, 4]  # no host sync per update: at the checkpoint of 2, then at the log of update 4
    assert "the loss was nan at update 3" in str(info.value)  # the first bad update, recorded on the device
    _assert_nothing_nonfinite_written(tmp_path, [2])


def test_diverging_cli_run_exits_2_and_writes_nothing_nonfinite(tiny_dataset: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "fastvla", "train",
        "--data.root", str(tiny_dataset), "--data.image-size", "32", "--data.val-fraction", "0",
        "--data.num-workers", "0", "--data.chunk-size", "4", "--batch-size", "4",
        "--steps", "6", "--save-every", "1", "--output-dir", str(out),
        "--optim.lr", "1e30", "--optim.head-lr", "1e30",  # AdamW steps of 1e30: NaN within two updates
        "--no-progress", "--no-tensorboard",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FASTVLA_DEBUG", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("fastvla train: error: training diverged: the loss was")
    assert "Traceback" not in result.stderr and "--optim.lr 1e+30" in errors[0]
    saved = [s for s, _ in ckpt.list_checkpoints(out)]
    assert 6 not in saved
    _assert_nothing_nonfinite_written(out, saved)
