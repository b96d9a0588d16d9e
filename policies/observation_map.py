"""ObservationMap: which keys of any Gymnasium observation are the model's cameras, state and instruction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastvla.constants import GYM_DEPTH, GYM_PIXELS, GYM_STATE


def _leaf_paths(obs: Any, prefix: str = "") -> list[str]:
    if not isinstance(obs, Mapping):
        return [prefix.rstrip("/")]
    paths: list[str] = []
    for key, value in obs.items():
        paths += _leaf_paths(value, f"{prefix}{key}/")
    return paths


def lookup(obs: Mapping[str, Any], path: str, what: str) -> Any:
    """Value at a ``/``-separated ``path`` of a nested observation, with a helpful error if absent.

    Args:
        obs: the (possibly nested) observation dict.
        path: e.g. ``"pixels/front"``; a flat key containing ``/`` is tried first.
        what: what the value is for, used in the error (``"camera 'front'"``).
    """
    if path in obs:
        return obs[path]
    node: Any = obs
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(
                f"{what} not in observation: no key {path!r}; available: {_leaf_paths(obs)}. "
                "Fix the ObservationMap, e.g. ObservationMap(cameras={'front': 'pixels/front'}, "
                "state='agent_pos')."
            )
        node = node[part]
    return node


@dataclass
class ObservationMap:
    """Declares once how an env's observation feeds the model.

    Args:
        cameras: model camera name -> observation path of an (H, W, 3) uint8 image (nested keys joined
            by ``/``).
        state: observation path of the proprioceptive state vector (None: the model gets a zero state).
        instruction: default instruction when ``select_action`` gets no ``task``.
        depth: model camera name -> observation path of an (H, W) depth map, for models built with depth.

    Example:
        >>> m = ObservationMap(cameras={"front": "pixels/top"}, instruction="insert the peg")
        >>> m.cameras
        {'front': 'pixels/top'}
    """

    cameras: dict[str, str]
    state: str | None = GYM_STATE
    instruction: str | None = None
    depth: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.cameras:
            raise ValueError(
                "ObservationMap needs at least one camera, e.g. cameras={'front': 'pixels/front'}"
            )
        self.cameras = dict(self.cameras)
        self.depth = dict(self.depth or {})

    @classmethod
    def for_fastvla_env(
        cls, cameras: list[str], depth: bool = False, instruction: str | None = None
    ) -> ObservationMap:
        """The map of FastVLA's own envs: ``pixels/<cam>``, ``depth/<cam>``, ``agent_pos``."""
        return cls(
            cameras={c: f"{GYM_PIXELS}/{c}" for c in cameras},
            state=GYM_STATE,
            instruction=instruction,
            depth={c: f"{GYM_DEPTH}/{c}" for c in cameras} if depth else {},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "cameras": self.cameras,
            "state": self.state,
            "instruction": self.instruction,
            "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationMap:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))
