"""What the policy server accepts: resource limits (:class:`ServerLimits`) and request validation.

Everything here runs on the event loop *before* a request reaches the policy queue, so a malformed or
oversized observation is answered with ``bad_request`` without holding the policy (or another client)
for a single forward pass. The checks are cheap: shapes and byte counts from array headers, plus one
``np.isfinite`` pass over float arrays.

Example:
    >>> import numpy as np
    >>> limits = ServerLimits(max_batch_size=8)
    >>> obs = {"pixels": {"front": np.zeros((2, 4, 4, 3), np.uint8)}, "agent_pos": np.zeros((2, 5))}
    >>> validate_observation(obs, batch_size=2, limits=limits)
    >>> validate_observation({"agent_pos": np.array([0.0, np.nan])}, batch_size=0, limits=limits)
    Traceback (most recent call last):
    ...
    fastvla.serving.limits.BadRequest: observation 'agent_pos' holds 1 NaN/inf value(s); send finite numbers
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastvla.serving import protocol as P
from fastvla.utils.config import config_field
from fastvla.utils.image import as_hw


class BadRequest(ValueError):
    """A request the server refuses before calling the policy; answered with a ``bad_request`` error."""


@dataclass
class ServerLimits:
    """Resource limits of :class:`~fastvla.serving.server.PolicyServer` (``fastvla serve`` flags).

    The defaults serve a handful of robots or vector-env evaluators with up to 64 observations of two
    224x224 cameras per request. Worst-case buffered request memory is roughly
    ``max_connections * (max_queue + 3) * max_message_bytes`` (a frame being parsed, queued frames, the
    frame being answered and its decoded copy): 1 GiB with the defaults, far less in practice because
    every connection has at most one request in the policy queue.

    Attributes:
        max_message_bytes: Largest accepted websocket frame; a larger one closes that connection with
            code 1009 before it is buffered in full.
        max_batch_size: Most observations in one request (a larger batch is ``bad_request``) and in one
            merged policy call.
        max_array_bytes: Largest single array in an observation (a batch of images is one array).
        max_image_pixels: Largest ``H * W`` of one image per sample (any array of rank >= 2 per sample:
            ``(H, W, C)`` images, ``(H, W)`` depth maps). 2**21 lets 1920x1080 through.
        max_queue: Frames a connection may buffer while its previous request is being answered; the
            socket is not read further (TCP back-pressure) until the queue drains.
        max_connections: Open websocket connections; more are refused with HTTP 503 (``/healthz``
            is always answered).
        idle_timeout_s: A connection that sends no complete message for this long is closed (code 1000,
            reason ``idle timeout``); :class:`~fastvla.serving.client.RemotePolicy` reconnects on its
            next request. Also ends slow partial frames.
        handshake_timeout_s: Time a new TCP connection has to complete the HTTP upgrade (slowloris).
        auth_log_interval_s: At most one warning per this many seconds for rejected tokens and refused
            connections, with a count of the suppressed ones.
    """

    max_message_bytes: int = config_field(
        P.DEFAULT_MAX_MESSAGE_BYTES, "Largest accepted request frame in bytes; larger ones close the socket."
    )
    max_batch_size: int = config_field(
        64, "Most observations per request (larger: bad_request) and per policy call."
    )
    max_array_bytes: int = config_field(
        P.DEFAULT_MAX_MESSAGE_BYTES, "Largest single array in an observation, in bytes."
    )
    max_image_pixels: int = config_field(2**21, "Largest H*W of one image per sample.")
    max_queue: int = config_field(1, "Frames a connection may buffer while its previous request is answered.")
    max_connections: int = config_field(16, "Open websocket connections; more are refused with HTTP 503.")
    idle_timeout_s: float = config_field(
        60.0, "Close connections that send no complete message for this long (seconds)."
    )
    handshake_timeout_s: float = config_field(
        5.0, "Time a new connection has to complete the websocket handshake."
    )
    auth_log_interval_s: float = config_field(
        10.0, "At most one warning per this many seconds for rejected logins."
    )

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes={self.max_message_bytes} is too small; use at least 1024")
        for name in ("max_batch_size", "max_array_bytes", "max_image_pixels", "max_queue", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("idle_timeout_s", "handshake_timeout_s", "auth_log_interval_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a positive number of seconds")


def _leaves(obs: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in obs.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _leaves(value, f"{path}/")
        else:
            out.append((path, value))
    return out


def count_samples(obs: Mapping[str, Any], batch_size: int | None) -> int:
    """Observations a request carries: its batch size, or for requests the batcher cannot classify,
    the largest leading dimension of a rank-4 array (a batch of images), else 1."""
    if batch_size is not None:
        return max(batch_size, 1)
    leading = [v.shape[0] for _, v in _leaves(obs) if isinstance(v, np.ndarray) and v.ndim >= 4]
    return max([1, *leading])


def validate_observation(
    obs: Mapping[str, Any],
    batch_size: int | None,
    limits: ServerLimits,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`BadRequest` naming the offending key if ``obs`` breaks a limit or the policy's schema.

    Args:
        obs: The decoded (nested) observation.
        batch_size: From :func:`~fastvla.serving.batching.infer_batch_size`: 0 single, B batch, None unknown.
        limits: The server's limits.
        metadata: The served policy's description; its ``observation_map`` (camera and state paths),
            ``state_dim`` and ``image_size`` are checked when present.
    """
    samples = count_samples(obs, batch_size)
    if samples > limits.max_batch_size:
        raise BadRequest(
            f"request carries {samples} observations but the server's max_batch_size is "
            f"{limits.max_batch_size}; split the batch (or restart the server with a larger --max-batch-size)"
        )
    for path, value in _leaves(obs):
        if isinstance(value, np.ndarray):
            _check_array(path, value, batch_size, limits)
        elif isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"observation {path!r} is {value}; send finite numbers")
    if metadata:
        _check_schema(obs, batch_size, metadata)


def _check_array(path: str, value: np.ndarray, batch_size: int | None, limits: ServerLimits) -> None:
    if value.nbytes > limits.max_array_bytes:
        raise BadRequest(
            f"observation {path!r} is {value.nbytes} bytes (shape {value.shape}); the server accepts arrays "
            f"of at most max_array_bytes={limits.max_array_bytes}"
        )
    sample_shape = value.shape[1:] if batch_size else value.shape
    if len(sample_shape) >= 2 and sample_shape[0] * sample_shape[1] > limits.max_image_pixels:
        raise BadRequest(
            f"observation {path!r} has images of {sample_shape[0]}x{sample_shape[1]} pixels; the server "
            f"accepts at most max_image_pixels={limits.max_image_pixels} per image: resize before sending"
        )
    if value.dtype.kind in "fc":
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise BadRequest(f"observation {path!r} holds {bad} NaN/inf value(s); send finite numbers")


def _lookup(obs: Mapping[str, Any], path: str) -> Any:
    if path in obs:
        return obs[path]
    node: Any = obs
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _check_schema(obs: Mapping[str, Any], batch_size: int | None, metadata: Mapping[str, Any]) -> None:
    """Camera and state keys, ranks and sizes the policy declared; mistakes are the client's to fix."""
    obs_map = metadata.get("observation_map") or {}
    available = [path for path, _ in _leaves(obs)]
    image_size = metadata.get("image_size")
    check_size = image_size is not None and not metadata.get("resize_images")
    for cam, path in (obs_map.get("cameras") or {}).items():
        image = _lookup(obs, path)
        if not isinstance(image, np.ndarray):
            raise BadRequest(
                f"camera {cam!r} expects an image array at {path!r}; observation has {available}"
            )
        if image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise BadRequest(
                f"camera {cam!r} ({path!r}) must be (H, W, 3) or (B, H, W, 3); got {image.shape}"
            )
        if check_size and tuple(image.shape[-3:-1]) != as_hw(image_size):
            raise BadRequest(
                f"camera {cam!r} ({path!r}) images are {tuple(image.shape[-3:-1])} but the policy expects "
                f"{as_hw(image_size)} (it does not resize); render at that size"
            )
    state_path, state_dim = obs_map.get("state"), metadata.get("state_dim")
    if state_path:
        state = _lookup(obs, state_path)
        if not isinstance(state, (np.ndarray, int, float)):
            raise BadRequest(f"state expected at {state_path!r}; observation has {available}")
        state = np.asarray(state)
        if state_dim is not None and (state.ndim == 0 or state.shape[-1] != state_dim):
            raise BadRequest(
                f"state {state_path!r} has shape {state.shape} but the policy expects {state_dim} values "
                "per observation"
            )


class LogThrottle:
    """Allow one log line per ``interval_s``, counting the suppressed ones in between.

    Example:
        >>> throttle = LogThrottle(60.0)
        >>> throttle.allow(), throttle.allow(), throttle.allow()
        (0, None, None)
    """

    def __init__(self, interval_s: float, event: str = "events") -> None:
        self.interval_s = interval_s
        self.event = event
        self._next = -math.inf
        self._suppressed = 0

    def allow(self) -> int | None:
        """None: stay quiet; else log now, mentioning the returned number of suppressed events."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self.interval_s
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed

    def warning(self, log: logging.Logger, msg: str, *args: Any) -> None:
        """``log.warning(msg, *args)`` if :meth:`allow` lets it, saying how many were suppressed."""
        suppressed = self.allow()
        if suppressed is not None:
            log.warning(
                f"{msg} (%d more {self.event} since the last warning; at most one warning per %g s)",
                *args,
                suppressed,
                self.interval_s,
            )
