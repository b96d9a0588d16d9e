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
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fastvla.constants import DATASET_STATS_FILE
from fastvla.utils.io import atomic_directory

CHECKPOINTS = "checkpoints"
MODEL_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
_NAME = re.compile(r"^step_(\d{8})$")
RNG_FILE = "rng.safetensors"
_REQUIRED = (MODEL_FILE, "optimizer.pt", "scheduler.pt", RNG_FILE, STATE_FILE)


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """Folder of the checkpoint written after update ``step``."""
    return Path(output_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first (temporary folders are ignored)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and all((path / f).is_file() for f in _REQUIRED):
            found.append((int(match.group(1)), path))
    return sorted(found)


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
    """
    path = Path(path)
    with atomic_directory(path, overwrite=True) as tmp:
        save_file(trainable_state_dict(model), tmp / MODEL_FILE, metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        save_rng_states(rng_states, tmp / RNG_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        if stats is not None:
            (tmp / DATASET_STATS_FILE).write_text(json.dumps(_jsonable(stats), indent=1))
        (tmp / STATE_FILE).write_text(json.dumps(dict(trainer_state), indent=2))
    return path


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore model, optimiser, scheduler and scaler in place.

    Returns:
        ``(trainer_state, rng_states)``; the caller restores its own rank's RNG state once everything
        that draws random numbers at start-up (model init, data split) has run.
    """
    path = Path(path)
    load_trainable_state_dict(model, load_file(path / MODEL_FILE), source=str(path))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if scaler is not None and (path / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_states = load_rng_states(path / RNG_FILE)
    trainer_state = json.loads((path / STATE_FILE).read_text())
    return trainer_state, rng_states


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
