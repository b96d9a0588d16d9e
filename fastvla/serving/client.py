"""``RemotePolicy``: a policy that runs on a :class:`~fastvla.serving.server.PolicyServer` elsewhere.

It has ``FastVLAPolicy``'s interface (``reset``, ``select_action``, ``predict_action_chunk``) and a
synchronous API, so plain evaluation loops and ``fastvla eval --policy ws://host:port`` use it unchanged.

The server is stateless; this client does receding-horizon control itself: ``select_action`` asks for a
chunk, executes its first ``n_action_steps`` actions one per call, then asks again. ``reset()`` clears
that queue (call it at every episode start, as with a local policy).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from fastvla.policies.base import BasePolicy
from fastvla.serving import protocol as P
from fastvla.serving.codec import CodecError, packb, unpackb

_CLOSE_TOO_BIG = 1009


def _connect_kwargs() -> dict[str, Any]:
    """Options that differ across websockets versions (>= 13): no proxy, a plain connection object."""
    params = inspect.signature(connect).parameters
    extra: dict[str, Any] = {}
    if "proxy" in params:
        extra["proxy"] = None  # loopback/LAN robots: never route through $HTTP_PROXY
    if "legacy" in params:
        extra["legacy"] = True  # return the connection itself, not a reconnecting iterator
    return extra


class RemotePolicy(BasePolicy):
    """Query a remote FastVLA policy server as if it were a local policy.

    Args:
        url: ``ws://host:port`` of ``fastvla serve``.
        token: Shared token if the server requires one; defaults to ``$FASTVLA_SERVE_TOKEN``.
        timeout: Seconds to wait for each reply (and for the connection); a dead server raises
            :class:`~fastvla.serving.protocol.RemotePolicyError` within this time instead of hanging.
        n_action_steps: Actions executed from each chunk before asking for a new one; defaults to the
            server policy's ``n_action_steps``, else the whole chunk.
        batched: Whether observations carry a leading batch dimension; None lets the server tell from the
            image ranks (only needed for image-less observations from vector envs).

    Attributes:
        metadata: The server's description of the policy (``action_dim``, ``chunk_size``, ``cameras``...).
        last_timing: Timing of the latest request: the server's ``server_ms``/``queue_ms``/``infer_ms``/
            ``batch_requests`` plus the client's ``round_trip_ms``.

    Example:
        >>> policy = RemotePolicy("ws://127.0.0.1:8000")  # doctest: +SKIP
        >>> policy.reset()  # doctest: +SKIP
        >>> action = policy.select_action(obs, task="pick up the red cube")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        n_action_steps: int | None = None,
        batched: bool | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"policy server url must start with ws:// or wss://, got {url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout} must be > 0 seconds")
        self.url = url
        self.token = token if token is not None else os.environ.get(P.TOKEN_ENV) or None
        self.timeout = float(timeout)
        self.batched = batched
        self.last_timing: dict[str, float] = {}
        self._ws: ClientConnection | None = None
        self._lock = threading.Lock()  # one request at a time per connection (threads may share a client)
        self._ids = itertools.count(1)
        self._queue: np.ndarray | None = None  # (n_action_steps, A) or (B, n_action_steps, A)
        self._queue_pos = 0
        self.metadata: dict[str, Any] = self._request({"type": P.METADATA})["metadata"]
        version = self.metadata.get("protocol_version")
        if version != P.PROTOCOL_VERSION:
            self.close()
            raise P.RemotePolicyError(
                f"server at {url} speaks protocol version {version}, this client {P.PROTOCOL_VERSION}; "
                "install the same fastvla version on both machines"
            )
        self.n_action_steps = n_action_steps or self.metadata.get("n_action_steps") or None
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be >= 1")

    # ------------------------------------------------------------------ policy interface
    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._queue = None
        self._queue_pos = 0

    def predict_action_chunk(
        self, obs: Mapping[str, Any], task: str | Sequence[str] | None = None
    ) -> np.ndarray:
        """One round trip: the policy's action chunk, ``(chunk, A)`` or ``(B, chunk, A)`` for a batch.

        Raises:
            RemotePolicyError: The server is unreachable, died, timed out, rejected the token or the
                request (the subclass says which).
        """
        msg: dict[str, Any] = {"type": P.INFER, "obs": _plain_obs(obs), "task": _plain_task(task)}
        if self.batched is not None:
            msg["batched"] = self.batched
        reply = self._request(msg)
        return reply["actions"]

    def select_action(self, obs: Mapping[str, Any], task: str | Sequence[str] | None = None) -> np.ndarray:
        """The next action, ``(A,)`` or ``(B, A)``: from the queued chunk, or a new chunk when spent."""
        if self._queue is None or self._queue_pos >= self._queue.shape[-2]:
            chunk = self.predict_action_chunk(obs, task)
            steps = self.n_action_steps or chunk.shape[-2]
            self._queue = chunk[..., :steps, :]
            self._queue_pos = 0
        action = self._queue[..., self._queue_pos, :]
        self._queue_pos += 1
        return action

    # ------------------------------------------------------------------ extras
    def ping(self) -> float:
        """Round-trip time of a ``ping`` in milliseconds (no policy call)."""
        start = time.perf_counter()
        self._request({"type": P.PING})
        return (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        """Close the connection (the next request reconnects)."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            with contextlib.suppress(Exception):  # already dead: nothing to close cleanly
                ws.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemotePolicy({self.url!r}, policy={self.metadata.get('policy_class')!r})"

    # ------------------------------------------------------------------ transport
    def _connect(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            return connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.timeout,
                close_timeout=min(self.timeout, 2.0),
                compression=None,
                max_size=None,  # replies are small; the bound that matters is the server's
                **_connect_kwargs(),
            )
        except InvalidStatus as err:
            status = err.response.status_code
            if status == 401:
                raise P.AuthenticationError(
                    f"policy server at {self.url} rejected the token (HTTP 401): pass "
                    f"RemotePolicy(url, token=...) or set {P.TOKEN_ENV} to the server's --token"
                ) from None
            if status == 503:
                raise P.ServerUnavailableError(
                    f"policy server at {self.url} is at its connection limit (HTTP 503); close unused "
                    "RemotePolicy objects, retry later, or restart it with a larger --max-connections"
                ) from None
            raise P.ServerUnavailableError(f"policy server at {self.url} answered HTTP {status}") from err
        except (OSError, TimeoutError, InvalidHandshake) as err:
            raise P.ServerUnavailableError(
                f"cannot connect to the policy server at {self.url} ({type(err).__name__}: {err}); "
                "is `fastvla serve` running there, and is the port reachable?"
            ) from err

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self._request_locked(msg)

    def _request_locked(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self._ws is not None and self._ws.state is not State.OPEN:
            self.close()  # the server closed it between requests (idle timeout): nothing was outstanding
        if self._ws is None:
            self._ws = self._connect()
        try:
            return self._exchange(msg)
        except _IdleClosed:
            # The server's idle close crossed our request on the wire. It never ran (the server closes
            # only connections with nothing in flight) and the server is stateless: send it again.
            self._ws = self._connect()
            return self._exchange(msg)

    def _exchange(self, msg: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        msg["id"] = request_id
        data = packb(msg)
        limit = getattr(self, "metadata", {}).get("max_message_bytes")
        if limit is not None and len(data) > limit:
            raise P.MessageTooLargeError(
                f"request of {len(data)} bytes exceeds the server's max_message_bytes={limit}; send "
                "smaller images or a smaller batch, or restart the server with a larger --max-message-bytes"
            )
        start = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        try:
            self._ws.send(data)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                reply = unpackb(self._ws.recv(timeout=remaining))
                if isinstance(reply, dict) and reply.get("id") == request_id:
                    break  # replies to requests abandoned after a timeout are skipped above
        except TimeoutError:
            self.close()  # the late reply must not be read as the next request's answer
            raise P.ServerTimeoutError(
                f"no reply from the policy server at {self.url} within {self.timeout:g} s; "
                "the server may be overloaded or hung (raise RemotePolicy(timeout=...) for slow policies)"
            ) from None
        except ConnectionClosed as err:
            self.close()
            code = err.rcvd.code if err.rcvd is not None else None
            if code == 1000 and err.rcvd.reason.startswith(P.IDLE_CLOSE_REASON):
                raise _IdleClosed from None
            if code == _CLOSE_TOO_BIG:
                raise P.MessageTooLargeError(
                    f"the policy server at {self.url} closed the connection: message too big "
                    f"({len(data)} bytes); restart it with a larger --max-message-bytes"
                ) from None
            raise P.ServerDisconnectedError(
                f"lost the connection to the policy server at {self.url} while waiting for a reply "
                f"({err}); was the server stopped or killed?"
            ) from None
        except CodecError as err:
            self.close()
            raise P.RemotePolicyError(f"unreadable reply from {self.url}: {err}") from err
        self.last_timing = {
            **reply.get("timing", {}),
            "round_trip_ms": (time.perf_counter() - start) * 1000.0,
        }
        if reply.get("type") == P.ERROR:
            raise P.ServerError(reply.get("code", P.SERVER_ERROR), reply.get("message", ""))
        return reply


class _IdleClosed(Exception):
    """The server closed the connection for idleness just as a request was sent."""


def _plain_obs(obs: Mapping[str, Any]) -> dict[str, Any]:
    """Gymnasium observations may hold tuples or torch tensors; send dicts of numpy arrays."""
    if not isinstance(obs, Mapping):
        raise TypeError(
            f"obs must be a mapping of arrays (a Gymnasium Dict observation), got {type(obs).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in obs.items():
        if isinstance(value, Mapping):
            out[str(key)] = _plain_obs(value)
        elif hasattr(value, "detach"):
            out[str(key)] = value.detach().cpu().numpy()
        else:
            out[str(key)] = np.asarray(value) if isinstance(value, (list, tuple)) else value
    return out


def _plain_task(task: str | Sequence[str] | None) -> str | list[str] | None:
    if task is None or isinstance(task, str):
        return task
    if isinstance(task, np.ndarray):
        task = task.tolist()
    return [str(t) for t in task]
