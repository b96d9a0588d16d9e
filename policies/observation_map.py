"""ObservationMap: where any Gymnasium env keeps the model's cameras, state, instruction and success.

Cameras, state and depth are observation paths (nested keys joined by ``/``). The instruction and the
success flag are *sources*, strings with a prefix:

- instruction: ``"info:KEY"`` (``info["goal_text"]``), ``"obs:PATH"`` (a text observation such as
  ``obs["task"]["text"]``), ``"text:..."`` or any other plain string (that fixed instruction for every
  episode), or ``None`` (``info["task"]`` when the env gives one, FastVLA's convention);
- success: ``"info:KEY"`` (``info["is_success"]``, the default; Meta-World's ``"info:success"``) or
  ``"terminated"`` (an episode that terminates, rather than being truncated, succeeded).

Paths under ``info:`` are ``/``-separated too. A wrong path raises a ``KeyError`` that lists the
available observation paths or info keys.

Example:
    >>> m = ObservationMap(cameras={"top": "sensors/rgb_top"}, state="proprio",
    ...                    instruction="info:goal_text", success="info:solved")
    >>> ObservationMap.from_dict(m.to_dict()) == m
    True
    >>> read_successes("terminated", {}, [True, False], batch=2).tolist()
    [True, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastvla.constants import GYM_DEPTH, GYM_PIXELS, GYM_STATE, INFO_SUCCESS, INFO_TASK

INFO = "info:"
OBS = "obs:"
TEXT = "text:"
TERMINATED = "terminated"
DEFAULT_SUCCESS = INFO + INFO_SUCCESS


def _leaf_paths(obs: Any, prefix: str = "") -> list[str]:
    if not isinstance(obs, Mapping):
        return [prefix.rstrip("/")]
    paths: list[str] = []
    for key, value in obs.items():
        if not str(key).startswith("_"):  # vector envs' info masks ("_is_success") are no keys to name
            paths += _leaf_paths(value, f"{prefix}{key}/")
    return paths


def _has(node: Mapping[str, Any], key: str) -> bool:
    """``key in node`` for dicts and ``gymnasium.spaces.Dict`` (whose ``in`` asks whether it is a sample)."""
    return key in node.keys()  # noqa: SIM118


def lookup(obs: Mapping[str, Any], path: str, what: str, where: str = "observation") -> Any:
    """Value at a ``/``-separated ``path`` of a nested observation, with a helpful error if absent.

    Args:
        obs: the (possibly nested) observation dict (or info dict, or ``gymnasium.spaces.Dict``).
        path: e.g. ``"pixels/front"``; a flat key containing ``/`` is tried first.
        what: what the value is for, used in the error (``"camera 'front'"``).
        where: ``"observation"`` or ``"info"``, used in the error.
    """
    if _has(obs, path):
        return obs[path]
    node: Any = obs
    for part in path.split("/"):
        if not isinstance(node, Mapping) or not _has(node, part):
            prefix = "info:" if where == "info" else ""
            raise KeyError(
                f"{what} not in {where}: no key {prefix + path!r}; available: {_leaf_paths(obs)}. "
                "Fix the ObservationMap, e.g. ObservationMap(cameras={'front': 'pixels/front'}, "
                "state='agent_pos', instruction='info:task', success='info:is_success')."
            )
        node = node[part]
    return node


def check_instruction_source(source: str | None) -> None:
    """Raise ``ValueError`` for an instruction source with an empty ``info:``/``obs:`` path."""
    if source is not None and source.startswith((INFO, OBS)) and not source.split(":", 1)[1].strip("/"):
        raise ValueError(
            f"instruction source {source!r} names no key; use e.g. 'info:goal_text', 'obs:task/text' or "
            "a fixed instruction ('text:pick up the cube')"
        )


def check_success_source(source: str) -> None:
    """Raise ``ValueError`` unless ``source`` is ``info:KEY`` or ``terminated``."""
    if source == TERMINATED or (source.startswith(INFO) and source[len(INFO) :].strip("/")):
        return
    raise ValueError(
        f"success source {source!r} is not 'info:KEY' or 'terminated'; e.g. 'info:is_success' (FastVLA), "
        f"'info:success' (Meta-World), or 'terminated' (an episode that terminates succeeded)"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info_rows(info: Mapping[str, Any], path: str, batch: int, what: str) -> tuple[Any, np.ndarray]:
    """``(values, mask)`` of a vector env's info entry at ``path`` (mask: rows that set it)."""
    values = lookup(info, path, what, where="info")
    parent, _, last = path.rpartition("/")
    if _has(info, path) or not parent:
        node, last = info, path
    else:
        node = lookup(info, parent, what, where="info")
    mask = node.get(f"_{last}", np.ones(batch, bool)) if isinstance(node, Mapping) else np.ones(batch, bool)
    return values, np.asarray(mask, dtype=bool)


def read_instructions(source: str | None, obs: Any, info: Mapping[str, Any], batch: int) -> list[str | None]:
    """One instruction per row of a vector env's ``(obs, info)`` batch, read from ``source``.

    Args:
        source: ``"info:KEY"``, ``"obs:PATH"``, a fixed instruction (``"text:..."`` or a plain string), or
            ``None`` (``info["task"]`` where the env gives it, else ``None``).
        obs: the batched observation (leading dimension ``batch``).
        info: the batched info dict of the same ``reset``/``step``.
        batch: number of rows.

    Raises:
        KeyError: the ``info:``/``obs:`` path does not exist (names the available ones).
    """
    if source is None:
        if INFO_TASK not in info:
            return [None] * batch
        source = INFO + INFO_TASK
    if source.startswith(INFO):
        values, mask = _info_rows(info, source[len(INFO) :], batch, "instruction")
        return [_text(v) if m else None for v, m in zip(values, mask)]
    if source.startswith(OBS):
        values = lookup(obs, source[len(OBS) :], "instruction")
        if isinstance(values, (str, bytes)):
            return [_text(values)] * batch
        texts = [_text(v) for v in np.asarray(values, dtype=object).reshape(-1)]
        if len(texts) != batch:
            raise ValueError(f"instruction {source!r} holds {len(texts)} texts for a batch of {batch}")
        return texts
    return [source.removeprefix(TEXT)] * batch


def read_successes(
    source: str, info: Mapping[str, Any], terminated: Any, batch: int, strict: bool = False
) -> np.ndarray:
    """Success flag per row of a vector env's ``step`` result, read from ``source``.

    Args:
        source: ``"info:KEY"`` or ``"terminated"``.
        info: the batched info dict of the step.
        terminated: the step's ``terminated`` flags.
        batch: number of rows.
        strict: also raise when the default key (``info:is_success``) is missing; without, an env that
            reports no success (a plain Gymnasium task) counts every episode as failed. Any other key
            must be in the info of every step.

    Raises:
        KeyError: the info key is missing (names the keys the info has).
    """
    check_success_source(source)
    if source == TERMINATED:
        return np.asarray(terminated, dtype=bool).reshape(batch)
    path = source[len(INFO) :]
    if source == DEFAULT_SUCCESS and not strict and path not in info:
        return np.zeros(batch, dtype=bool)
    values, mask = _info_rows(info, path, batch, "success")
    return np.asarray(values).astype(bool).reshape(batch) & mask


@dataclass
class ObservationMap:
    """Declares once how an env's observation feeds the model, and where instruction and success are.

    Args:
        cameras: model camera name -> observation path of an (H, W, 3) uint8 image (nested keys joined
            by ``/``).
        state: observation path of the proprioceptive state vector (None: the model gets a zero state).
        instruction: where the instruction comes from: ``"info:KEY"``, ``"obs:PATH"``, a fixed string
            (``"text:..."`` or any other plain string), or None (``info["task"]``; ``select_action`` then
            needs ``task=``).
        depth: model camera name -> observation path of an (H, W) depth map, for models built with depth.
        success: where success comes from: ``"info:KEY"`` (default ``"info:is_success"``) or
            ``"terminated"``.

    Example:
        >>> m = ObservationMap(cameras={"front": "pixels/top"}, instruction="insert the peg")
        >>> m.cameras, m.success
        ({'front': 'pixels/top'}, 'info:is_success')
    """

    cameras: dict[str, str]
    state: str | None = GYM_STATE
    instruction: str | None = None
    depth: dict[str, str] = field(default_factory=dict)
    success: str = DEFAULT_SUCCESS

    def __post_init__(self):
        if not self.cameras:
            raise ValueError(
                "ObservationMap needs at least one camera, e.g. cameras={'front': 'pixels/front'}"
            )
        self.cameras = dict(self.cameras)
        self.depth = dict(self.depth or {})
        check_instruction_source(self.instruction)
        check_success_source(self.success)

    @classmethod
    def for_fastvla_env(
        cls, cameras: Sequence[str], depth: bool = False, instruction: str | None = None
    ) -> ObservationMap:
        """The map of FastVLA's own envs: ``pixels/<cam>``, ``depth/<cam>``, ``agent_pos``."""
        return cls(
            cameras={c: f"{GYM_PIXELS}/{c}" for c in cameras},
            state=GYM_STATE,
            instruction=instruction,
            depth={c: f"{GYM_DEPTH}/{c}" for c in cameras} if depth else {},
        )

    def instructions(self, obs: Any, info: Mapping[str, Any], batch: int) -> list[str | None]:
        """:func:`read_instructions` from this map's ``instruction`` source."""
        return read_instructions(self.instruction, obs, info, batch)

    def successes(
        self, info: Mapping[str, Any], terminated: Any, batch: int, strict: bool = False
    ) -> np.ndarray:
        """:func:`read_successes` from this map's ``success`` source."""
        return read_successes(self.success, info, terminated, batch, strict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "cameras": self.cameras,
            "state": self.state,
            "instruction": self.instruction,
            "depth": self.depth,
            "success": self.success,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationMap:
        """Inverse of :meth:`to_dict` (maps saved before ``success`` existed get the default).

        Raises:
            ValueError: an unknown key (names the valid ones).
        """
        unknown = sorted(set(data) - {"cameras", "state", "instruction", "depth", "success"})
        if unknown:
            raise ValueError(
                f"unknown ObservationMap key(s) {unknown}; valid: cameras, state, instruction, depth, success"
            )
        return cls(**dict(data))
