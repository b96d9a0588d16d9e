"""Atomic checkpoints: complete or absent, round trips of every state, clear errors on mismatch."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fastvla.errors import CheckpointError, NonFiniteError
from fastvla.training import checkpoint as ckpt
from fastvla.training.config import OptimConfig
from fastvla.training.optim import build_optimizer, build_scheduler


class _Net(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)  # running stats are buffers: they must be saved too
        self.action_head = nn.Linear(8, out)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.action_head(self.norm(self.body(x)))


def _trained(seed: int = 0) -> tuple[_Net, torch.optim.Optimizer, object]:
    torch.manual_seed(seed)
    model = _Net()
    cfg = OptimConfig(warmup_steps=1, head_modules=("action_head",))
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def _save(path: Path, model: nn.Module, opt, sched, step: int = 3) -> Path:
    return ckpt.save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=None,
        trainer_state={"step": step},
        rng_states=[ckpt.capture_rng_state()],
        config_yaml="steps: 10\n",
        stats={"action": {"mean": np.zeros(3, np.float32)}},
    )


def test_round_trip_restores_model_optimizer_schedule_rng(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    expected_draws = (random.random(), np.random.rand(), torch.rand(1))

    fresh, fresh_opt, fresh_sched = _trained(seed=1)  # different weights and moments
    state, rngs = ckpt.load_checkpoint(
        path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=None
    )
    ckpt.restore_rng_state(rngs[0])
    assert state == {"step": 3}
    assert (random.random(), np.random.rand()) == expected_draws[:2] and torch.equal(
        torch.rand(1), expected_draws[2]
    )
    for name, tensor in model.state_dict().items():
        if not name.startswith("frozen."):  # frozen weights come from the model source, not the checkpoint
            assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh_sched.state_dict() == sched.state_dict()
    a, b = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    saved = load_file(path / ckpt.MODEL_FILE)
    assert "norm.running_mean" in saved and "frozen.weight" not in saved


def test_failure_while_writing_leaves_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt, sched = _trained()
    _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    real_save = torch.save

    def crash_on_rng(obj, f, *args, **kwargs):
        if str(f).endswith("scheduler.pt"):
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_rng)
    with pytest.raises(OSError, match="disk full"):
        _save(ckpt.checkpoint_path(tmp_path, 6), model, opt, sched, step=6)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 3)
    assert sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS).iterdir()) == ["step_00000003"]


def test_killed_writer_leftovers_are_ignored_and_cleaned(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    # What a SIGKILL during atomic_directory leaves: a dot-named temporary folder with some files.
    partial = tmp_path / ckpt.CHECKPOINTS / ".step_00000006.k3j2.tmp"
    partial.mkdir()
    (partial / ckpt.MODEL_FILE).write_bytes(b"\0" * 10)
    # And a folder with the right name but missing files is never treated as a checkpoint.
    (tmp_path / ckpt.CHECKPOINTS / "step_00000009").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 3)
    assert ckpt.remove_stale_temporaries(tmp_path) == [partial]
    assert not partial.exists()


def test_prune_keeps_newest(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    for step in (2, 4, 6, 8):
        _save(ckpt.checkpoint_path(tmp_path, step), model, opt, sched, step=step)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [6, 8]


def test_shape_mismatch_names_the_tensors(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    other = _Net(out=5)  # another action dimension
    with pytest.raises(ValueError, match=r"action_head.weight: checkpoint \(3, 8\) vs model \(5, 8\)"):
        ckpt.load_trainable_state_dict(other, load_file(path / ckpt.MODEL_FILE), source=str(path))


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a crafted checkpoint file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_holds_no_pickle_and_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    assert not list(path.glob("rng*.pt")), "RNG state must not be a pickle"
    marker = tmp_path / "pwned"
    # A planted rng.pt (the old format) is never opened; a crafted optimizer.pt is refused by weights_only.
    import pickle

    (path / "rng.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
    torch.save({"state": {}, "param_groups": [], "x": _RunsCode(marker)}, path / "optimizer.pt")
    fresh, fresh_opt, fresh_sched = _trained(seed=1)
    # The manifest catches the replaced file before it is opened at all...
    with pytest.raises(CheckpointError, match=r"optimizer\.pt: \d+ bytes, manifest\.json says"):
        ckpt.load_checkpoint(path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=None)
    # ...and without one (a checkpoint of an older version), weights_only refuses it.
    (path / ckpt.MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"optimizer\.pt: .*weights_only=True.*GLOBAL posix.system"):
        ckpt.load_checkpoint(path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=None)
    assert not marker.exists(), "loading a checkpoint ran code"


def test_rng_file_round_trips_several_ranks(tmp_path: Path) -> None:
    states = []
    for seed in (1, 2):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        random.gauss(0, 1)  # a cached Gaussian in Python's state
        states.append(ckpt.capture_rng_state())
    ckpt.save_rng_states(states, tmp_path / ckpt.RNG_FILE)
    loaded = ckpt.load_rng_states(tmp_path / ckpt.RNG_FILE)
    for original, back in zip(states, loaded, strict=True):
        assert back["python"] == original["python"]
        assert back["numpy"][0] == original["numpy"][0]
        assert np.array_equal(back["numpy"][1], original["numpy"][1])
        assert back["numpy"][2:] == original["numpy"][2:]
        assert torch.equal(back["torch"], original["torch"])


# ------------------------------------------------------------------------------------------- integrity
def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        file.write_bytes(b"")
    elif how == "missing":
        file.unlink()
    else:  # pragma: no cover
        raise AssertionError(how)


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    import hashlib
    import json

    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    files = json.loads((path / ckpt.MANIFEST_FILE).read_text())["files"]
    on_disk = sorted(p.name for p in path.iterdir() if p.name != ckpt.MANIFEST_FILE)
    assert sorted(files) == on_disk and set(ckpt._REQUIRED) <= set(files)
    for name, entry in files.items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("how", ["truncated", "empty", "missing"])
@pytest.mark.parametrize("name", ckpt._REQUIRED)
def test_damaged_file_is_named_and_resume_falls_back(
    tmp_path: Path, name: str, how: str, manifest: bool
) -> None:
    model, opt, sched = _trained()
    _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched, step=3)
    newest = _save(ckpt.checkpoint_path(tmp_path, 6), model, opt, sched, step=6)
    if not manifest:  # as a checkpoint written before manifests existed
        for _, path in ckpt.checkpoint_folders(tmp_path):
            (path / ckpt.MANIFEST_FILE).unlink()
    _damage(newest / name, how)

    with pytest.raises(CheckpointError, match=re.escape(str(newest / name))):
        ckpt.read_checkpoint(newest)
    with pytest.warns(
        ckpt.CorruptCheckpointWarning, match=rf"skipping checkpoint step_00000006.*{re.escape(name)}"
    ):
        contents = ckpt.read_latest_usable(tmp_path)
    assert contents.path == ckpt.checkpoint_path(tmp_path, 3) and contents.trainer_state == {"step": 3}


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_nonfinite_weights_in_a_checkpoint_are_refused(tmp_path: Path, manifest: bool) -> None:
    from safetensors.torch import save_file

    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    tensors = load_file(path / ckpt.MODEL_FILE)
    tensors["body.weight"][0, 0] = float("nan")
    save_file(tensors, path / ckpt.MODEL_FILE)
    (path / ckpt.MANIFEST_FILE).unlink()
    if manifest:  # a manifest that matches the file: the values themselves are checked
        ckpt.write_manifest(path)
    with pytest.raises(CheckpointError, match=r"trainable\.safetensors: NaN/inf values in body\.weight"):
        ckpt.read_checkpoint(path)


def test_damaged_manifest_and_flipped_byte_are_caught(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    data = bytearray((path / ckpt.MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed in the last weight
    (path / ckpt.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"trainable\.safetensors: SHA-256 differs from manifest"):
        ckpt.read_checkpoint(path)
    (path / ckpt.MANIFEST_FILE).write_text('{"files": ')
    with pytest.raises(CheckpointError, match=r"manifest\.json: unreadable"):
        ckpt.read_checkpoint(path)


def test_older_checkpoint_without_manifest_still_loads(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    path = _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    (path / ckpt.MANIFEST_FILE).unlink()
    fresh, fresh_opt, fresh_sched = _trained(seed=1)
    state, _ = ckpt.load_checkpoint(
        path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=None
    )
    assert state == {"step": 3}
    assert torch.equal(fresh.body.weight, model.body.weight)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    for step in (3, 6):
        path = _save(ckpt.checkpoint_path(tmp_path, step), model, opt, sched, step=step)
        _damage(path / "scheduler.pt", "empty")
    with (
        pytest.warns(ckpt.CorruptCheckpointWarning),
        pytest.raises(
            CheckpointError, match=r"no usable checkpoint in .*step_00000006.*step_00000003.*--overwrite"
        ),
    ):
        ckpt.read_latest_usable(tmp_path)
    assert ckpt.read_latest_usable(tmp_path / "elsewhere") is None  # no checkpoints at all: start fresh


def test_save_refuses_nonfinite_weights(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    with torch.no_grad():
        model.action_head.bias[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"refusing to write checkpoint .*action_head\.bias"):
        _save(ckpt.checkpoint_path(tmp_path, 3), model, opt, sched)
    assert not (tmp_path / ckpt.CHECKPOINTS).exists() or not any((tmp_path / ckpt.CHECKPOINTS).iterdir())
