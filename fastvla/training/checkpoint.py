"""Atomic training checkpoints and resume.

A checkpoint is a folder ``<output_dir>/checkpoints/step_00000100/`` built under a temporary name and
renamed into place only once every file is written (:func:`fastvla.utils.io.atomic_directory`), so a
crash or ``kill -9`` never leaves a half-written checkpoint: a checkpoint folder exists completely or
not at all. It holds:

* ``trainable.safetensors`` — trainable parameters (LoRA adapters, heads, or the whole model when it
  is fully trained) and the model's persistent buffers; frozen (possibly 4-bit) base weights are
  rebuilt from the model source on resume, so checkpoints stay small under QLoRA.
* ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (fp16 loss scaling only).
* ``rng.safetensors`` — Python, NumPy, torch CPU and CUDA generator states of every rank, as plain
  tensors plus JSON metadata: nothing in a checkpoint is a pickle, so a crafted checkpoint folder cannot run
  code on ``--resume``.
* ``trainer_state.json`` — update count, data position (epoch, batch), samples seen, process layout.
* ``config.yaml`` and ``dataset_stats.json``.
* ``manifest.json`` — written last: the size and SHA-256 of every other file.

Atomic renaming guards against a crash of the writer, not against what happens to the files afterwards
(a full disk, a power cut before the data reached the disk, a copy that stopped half-way, bit rot).
:func:`read_checkpoint` therefore checks a checkpoint before anything is restored from it: every file
against the manifest, then that every file loads and that the weights are finite. On ``--resume`` the
trainer reads checkpoints newest first and warns about (and skips) each one that fails
(:func:`read_latest_usable`). Checkpoints of older versions, without a manifest, are used when every file
loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fastvla.constants import DATASET_STATS_FILE
from fastvla.errors import CheckpointError, NonFiniteError
from fastvla.utils.io import atomic_directory

CHECKPOINTS = "checkpoints"
MODEL_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
_NAME = re.compile(r"^step_(\d{8})$")
RNG_FILE = "rng.safetensors"
MANIFEST_FILE = "manifest.json"
OPTIMIZER_FILE, SCHEDULER_FILE, SCALER_FILE = "optimizer.pt", "scheduler.pt", "scaler.pt"
_REQUIRED = (MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE, STATE_FILE)


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint was skipped on resume because a file is missing, damaged or holds non-finite weights."""


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """Folder of the checkpoint written after update ``step``."""
    return Path(output_dir) / CHECKPOINTS / f"step_{step:08d}"


def checkpoint_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``step_*`` folder as ``(step, path)``, oldest first, complete or not (resume reports them)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first (temporary folders are ignored).

    Complete means every required file is present; whether the files are intact is
    :func:`read_checkpoint`'s job.
    """
    return [(s, p) for s, p in checkpoint_folders(output_dir) if all((p / f).is_file() for f in _REQUIRED)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Delete temporary checkpoint folders a killed run left behind; returns what was removed."""
    root = Path(output_dir) / CHECKPOINTS
    stale = [p for p in root.glob(".step_*") if p.is_dir()] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """States of every random generator a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_states(states: list[dict[str, Any]], path: str | Path) -> None:
    """Write :func:`capture_rng_state` results of every rank as safetensors (no pickle).

    Layout: per rank ``r``, tensors ``{r}.python`` (the 625 Mersenne-Twister words, int64),
    ``{r}.numpy`` (624 words, int64), ``{r}.torch`` (uint8) and ``{r}.cuda.{i}``; the few scalars (Python's
    version and cached Gaussian, NumPy's position and cached Gaussian) go in the JSON metadata.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: list[dict[str, Any]] = []
    for rank, state in enumerate(states):
        version, words, gauss = state["python"]
        kind, keys, pos, has_gauss, cached = state["numpy"]
        tensors[f"{rank}.python"] = torch.tensor(words, dtype=torch.int64)
        tensors[f"{rank}.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
        tensors[f"{rank}.torch"] = state["torch"].contiguous()
        for i, cuda in enumerate(state.get("cuda", [])):
            tensors[f"{rank}.cuda.{i}"] = cuda.contiguous()
        scalars.append(
            {
                "python": [version, gauss],
                "numpy": [kind, int(pos), int(has_gauss), float(cached)],
                "cuda": len(state.get("cuda", [])),
            }
        )
    save_file(tensors, str(path), metadata={"ranks": json.dumps(scalars)})


def load_rng_states(path: str | Path) -> list[dict[str, Any]]:
    """Read :func:`save_rng_states`' file back into :func:`restore_rng_state` inputs.

    Raises:
        ValueError: the file is not a FastVLA RNG file (missing metadata or tensors).
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        names = set(f.keys())
        tensors = {name: f.get_tensor(name) for name in names}
    try:
        scalars = json.loads(meta["ranks"])
        states = []
        for rank, s in enumerate(scalars):
            version, gauss = s["python"]
            kind, pos, has_gauss, cached = s["numpy"]
            state: dict[str, Any] = {
                "python": (int(version), tuple(int(w) for w in tensors[f"{rank}.python"].tolist()), gauss),
                "numpy": (
                    str(kind),
                    tensors[f"{rank}.numpy"].numpy().astype(np.uint32),
                    pos,
                    has_gauss,
                    cached,
                ),
                "torch": tensors[f"{rank}.torch"],
            }
            if s["cuda"]:
                state["cuda"] = [tensors[f"{rank}.cuda.{i}"] for i in range(int(s["cuda"]))]
            states.append(state)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a FastVLA RNG state file ({type(e).__name__}: {e})") from e
    return states


# --------------------------------------------------------------------------------------------- model
def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and persistent buffers of ``model`` (detached CPU copies, state-dict keys)."""
    state = model.state_dict()
    keep = {name for name, p in model.named_parameters() if p.requires_grad}
    keep |= {name for name, _ in model.named_buffers()} & set(state)
    # clone: safetensors refuses tensors sharing storage (tied weights), and the copy must not alias
    # parameters the next optimizer step will change while the file is written.
    return {name: state[name].detach().to("cpu").contiguous().clone() for name in sorted(keep & set(state))}


def load_trainable_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load tensors saved by :func:`trainable_state_dict` into ``model``.

    Raises:
        ValueError: names or shapes do not match ``model`` (a different model config, e.g. another
            action dimension or chunk size than the checkpoint was trained with).
    """
    own = model.state_dict()
    unknown = sorted(set(tensors) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if unknown or mismatched:
        detail = "; ".join(mismatched[:5]) or f"unknown tensors {unknown[:5]}"
        raise ValueError(
            f"checkpoint {source} does not fit this model ({detail}). It was trained with another model "
            "config (action dimension, chunk size, cameras, LoRA settings); resume with the config saved "
            "in the checkpoint's config.yaml"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value.to(own[name].dtype))


# ---------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    trainer_state: Mapping[str, Any],
    rng_states: list[dict[str, Any]],
    config_yaml: str,
    stats: Mapping[str, Any] | None,
) -> Path:
    """Write one checkpoint atomically (call on the main process only).

    Args:
        path: final folder (from :func:`checkpoint_path`); it must not exist yet.
        model: the unwrapped model.
        optimizer: optimiser whose state to save.
        scheduler: learning-rate scheduler.
        scaler: fp16 gradient scaler or ``None``.
        trainer_state: JSON-serialisable counters (step, data position, ...).
        rng_states: one :func:`capture_rng_state` per rank, in rank order.
        config_yaml: the run's config as YAML text.
        stats: dataset statistics (LeRobot layout) the model is normalised with.

    Raises:
        NonFiniteError: a trainable weight or buffer holds NaN or inf (nothing is written).
    """
    path = Path(path)
    tensors = trainable_state_dict(model)
    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteError(
            f"refusing to write checkpoint {path}: the weights hold NaN/inf values ({_names(bad)}); "
            "training diverged: lower the learning rate or check the data for NaN/inf values"
        )
    with atomic_directory(path, overwrite=True) as tmp:
        save_file(tensors, tmp / MODEL_FILE, metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER_FILE)
        save_rng_states(rng_states, tmp / RNG_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        if stats is not None:
            (tmp / DATASET_STATS_FILE).write_text(json.dumps(_jsonable(stats), indent=1))
        (tmp / STATE_FILE).write_text(json.dumps(dict(trainer_state), indent=2))
        write_manifest(tmp)  # last: its presence means every file above was written in full
    return path


@dataclass
class CheckpointContents:
    """Everything a checkpoint holds, read and checked by :func:`read_checkpoint` (nothing restored yet)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng_states: list[dict[str, Any]]
    trainer_state: dict[str, Any]


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Read every file of a checkpoint into memory, checking it on the way.

    Checks, in order: the manifest (when there is one: each file listed is present with its size and
    SHA-256), that every required file is present and not empty, that each loads (``torch.load`` with
    ``weights_only=True``), that ``trainer_state.json`` holds the update count, and that every weight in
    ``trainable.safetensors`` is finite.

    Raises:
        CheckpointError: naming the first file that fails and why.
    """
    path = Path(path)
    _verify_manifest(path)
    for name in _REQUIRED:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if file.stat().st_size == 0:
            raise CheckpointError(f"{file}: empty file (0 bytes)")
    tensors = _load(path / MODEL_FILE, load_file)
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"{path / MODEL_FILE}: NaN/inf values in {_names(bad)}")
    state = _load(path / STATE_FILE, lambda f: json.loads(Path(f).read_text()))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / STATE_FILE}: no integer 'step' in it")
    scaler_file = path / SCALER_FILE
    return CheckpointContents(
        path=path,
        tensors=tensors,
        optimizer=_load(path / OPTIMIZER_FILE, _torch_load),
        scheduler=_load(path / SCHEDULER_FILE, _torch_load),
        scaler=_load(scaler_file, _torch_load) if scaler_file.is_file() else None,
        rng_states=_load(path / RNG_FILE, load_rng_states),
        trainer_state=state,
    )


def apply_checkpoint(
    contents: CheckpointContents,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore model, optimiser, scheduler and scaler in place from :func:`read_checkpoint`'s result.

    Returns:
        ``(trainer_state, rng_states)``; the caller restores its own rank's RNG state once everything
        that draws random numbers at start-up (model init, data split) has run.

    Raises:
        ValueError: the checkpoint was trained with another model config (names or shapes differ).
    """
    load_trainable_state_dict(model, contents.tensors, source=str(contents.path))
    optimizer.load_state_dict(contents.optimizer)
    scheduler.load_state_dict(contents.scheduler)
    if scaler is not None and contents.scaler is not None:
        scaler.load_state_dict(contents.scaler)
    return contents.trainer_state, contents.rng_states


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`read_checkpoint` then :func:`apply_checkpoint`: nothing is restored from a corrupt checkpoint.

    Raises:
        CheckpointError: a file is missing, damaged, or holds non-finite weights.
    """
    contents = read_checkpoint(path)
    return apply_checkpoint(contents, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)


def read_latest_usable(
    output_dir: str | Path, warn: Callable[[str], None] | None = None
) -> CheckpointContents | None:
    """The newest checkpoint of a run that passes :func:`read_checkpoint`, skipping (and reporting) others.

    Args:
        output_dir: the run folder (its ``checkpoints/`` is searched).
        warn: called with one line per skipped checkpoint (default: a :class:`CorruptCheckpointWarning`).

    Returns:
        The checkpoint's contents, or ``None`` when the run has no checkpoint folder at all.

    Raises:
        CheckpointError: there are checkpoints, but none is usable (the message lists why for each).
    """
    if warn is None:

        def warn(message: str) -> None:
            warnings.warn(message, CorruptCheckpointWarning, stacklevel=3)

    folders = checkpoint_folders(output_dir)
    problems = []
    for _, path in reversed(folders):
        try:
            return read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            warn(f"skipping checkpoint {path.name}, it is unusable: {err}")
    if not folders:
        return None
    raise CheckpointError(
        f"no usable checkpoint in {Path(output_dir) / CHECKPOINTS} to resume from ({'; '.join(problems)}). "
        "Start the run again with --overwrite (or another --output-dir), or restore the checkpoint files"
    )


# ------------------------------------------------------------------------------------------ integrity
def write_manifest(folder: str | Path) -> Path:
    """Write ``manifest.json``: size and SHA-256 of every other file in ``folder``, each flushed to disk.

    The fsync makes the data durable before the folder is renamed into place: without it, a power cut
    can leave a renamed checkpoint whose files are empty (delayed allocation).
    """
    folder = Path(folder)
    files = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE):
        files[file.name] = {"size": file.stat().st_size, "sha256": _sha256(file, fsync=True)}
    manifest = folder / MANIFEST_FILE
    with open(manifest, "w") as f:
        json.dump({"format": "fastvla-checkpoint", "version": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return manifest


def _verify_manifest(path: Path) -> None:
    """Every file the manifest lists has its recorded size and hash (no manifest: an older checkpoint)."""
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(name, int(e["size"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{manifest}: unreadable ({_reason(err)})") from err
    for name, size, digest in entries:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (listed in {MANIFEST_FILE})")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"{file}: {actual} bytes, {MANIFEST_FILE} says {size} (truncated or replaced)"
            )
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: SHA-256 differs from {MANIFEST_FILE} (the file is damaged)")


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf."""
    return [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _sha256(file: Path, fsync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _torch_load(file: Path) -> Any:
    return torch.load(file, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects


def _load(file: Path, loader: Callable[[Path], Any]) -> Any:
    try:
        return loader(file)
    except Exception as err:  # any failure to parse the file means it is unusable, whatever the library
        raise CheckpointError(f"{file}: cannot be loaded ({_reason(err)})") from err


def _reason(err: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if isinstance(err, pickle.UnpicklingError):
        # torch's first line suggests weights_only=False; the useful line names the refused object.
        lines = [line for line in lines if "GLOBAL" in line or "Unsupported" in line] or lines
        lines = [f"refused by torch.load(weights_only=True): {lines[0] if lines else 'not plain tensors'}"]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return np.asarray(value.tolist()).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
