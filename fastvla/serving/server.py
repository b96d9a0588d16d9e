"""A websocket policy server: observation (+ task) in, action chunk out, micro-batched across clients.

Design:

* **Stateless.** The server only calls ``policy.predict_action_chunk(obs, task)``, a pure function of its
  inputs, so one policy object serves every client, requests from different clients can share a forward
  pass, and a restarted server is indistinguishable from the old one. Receding-horizon control (execute
  ``n_action_steps`` of each chunk, then ask again) lives in the client (:class:`RemotePolicy`), whose
  ``reset()`` clears its own queue.
* **Micro-batching.** Requests go to a queue; a batcher takes the first, waits up to ``batch_window_ms``
  for more while some connected client has no request in the batch yet, stacks compatible requests and
  calls the policy once in a single worker thread (the event loop keeps answering pings and health checks
  meanwhile). Requests arriving during a forward pass form the next batch. If a merged call fails, each
  request is retried alone so one bad observation cannot fail another client's request.
* **Safe by default.** Binds 127.0.0.1; optional shared token (exactly one ``Authorization: Bearer``
  header, compared in constant time); frames over ``max_message_bytes`` close that connection with code
  1009 (the client checks the bound before sending); malformed messages get an ``error`` reply and the
  connection stays up.
* **Bounded under hostile load** (:class:`~fastvla.serving.limits.ServerLimits`): observations are
  validated on the event loop before they reach the policy queue (batch size, array and image sizes,
  NaN/inf, the policy's declared cameras and state), each connection buffers at most ``max_queue`` frames
  and has one request in the policy queue, connections beyond ``max_connections`` get HTTP 503, idle
  connections and unfinished handshakes are closed, and rejected logins are logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import http
import json
import logging
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from fastvla.serving import protocol as P
from fastvla.serving.batching import InferRequest, flatten, infer_batch_size, merge, split
from fastvla.serving.codec import CodecError, packb, unpackb
from fastvla.serving.limits import BadRequest, LogThrottle, ServerLimits, validate_observation

logger = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_CLOSE_TOO_BIG = 1009

__all__ = ["BadRequest", "PolicyServer", "ServerLimits", "describe_policy"]


def describe_policy(policy: Any) -> dict[str, Any]:
    """Metadata a client needs about a policy: action dim, chunk size, cameras, default ``n_action_steps``.

    Uses ``policy.serving_metadata()`` when the policy defines it, otherwise reads the attributes
    ``FastVLAPolicy`` exposes (``config.action_dim``, ``config.chunk_size``, ``config.cameras``,
    ``config.state_dim``, ``config.image_size``, ``n_action_steps``, ``obs_map``,
    ``processor.resize_images``). Unknown fields are None. The server validates requests against the
    observation map, state size and (for policies that do not resize) image size it finds here.
    """
    if callable(getattr(policy, "serving_metadata", None)):
        return dict(policy.serving_metadata())
    config = getattr(policy, "config", None)
    model_config = getattr(getattr(policy, "model", None), "config", None)

    def attr(name: str) -> Any:
        for source in (policy, config, model_config):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                return value
        return None

    obs_map = getattr(policy, "obs_map", None)
    cameras = attr("cameras")
    resize = getattr(getattr(policy, "processor", None), "resize_images", None)
    meta = {
        "policy_class": type(policy).__name__,
        "action_dim": attr("action_dim"),
        "chunk_size": attr("chunk_size"),
        "n_action_steps": attr("n_action_steps"),
        "state_dim": attr("state_dim"),
        "cameras": list(cameras) if cameras is not None else None,
        "image_size": attr("image_size"),
        "resize_images": resize if isinstance(resize, bool) else None,
        "observation_map": None,
    }
    if obs_map is not None:
        meta["observation_map"] = {
            "cameras": dict(getattr(obs_map, "cameras", {}) or {}),
            "state": getattr(obs_map, "state", None),
            "instruction": getattr(obs_map, "instruction", None),
        }
    return _plain(meta)


def _plain(value: Any) -> Any:
    """Convert metadata to msgpack/JSON-safe builtins (tuples to lists, numpy scalars to numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _as_actions(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class PolicyServer:
    """Serve ``policy`` over websockets (msgpack + numpy), micro-batching concurrent requests.

    Args:
        policy: Any object with ``predict_action_chunk(obs, task=None) -> np.ndarray`` (``FastVLAPolicy``
            or your own); called from one worker thread only.
        host: Interface to bind. The default is loopback; use ``0.0.0.0`` to accept other machines
            (set a token then).
        port: TCP port; 0 picks a free one (read it back from :attr:`url` after :meth:`start`).
        token: Shared secret clients must send as ``Authorization: Bearer <token>``; None disables auth.
        batch_window_ms: How long the batcher waits for other clients' requests before running a batch.
        metadata: Overrides merged into :func:`describe_policy`'s answer.
        limits: Resource limits (:class:`~fastvla.serving.limits.ServerLimits`; its defaults if None).
        **overrides: Any :class:`ServerLimits` field (``max_message_bytes=...``, ``max_batch_size=...``),
            applied on top of ``limits``.

    Example:
        >>> with PolicyServer(policy, port=0) as server:  # doctest: +SKIP
        ...     remote = RemotePolicy(server.url)
        ...     action = remote.select_action(obs)
    """

    def __init__(
        self,
        policy: Any,
        *,
        host: str = "127.0.0.1",
        port: int = P.DEFAULT_PORT,
        token: str | None = None,
        batch_window_ms: float = 2.0,
        metadata: Mapping[str, Any] | None = None,
        limits: ServerLimits | None = None,
        **overrides: Any,
    ) -> None:
        if not callable(getattr(policy, "predict_action_chunk", None)):
            raise TypeError(
                f"{type(policy).__name__} has no predict_action_chunk(obs, task=None): the server is "
                "stateless and needs whole action chunks; wrap select_action-only policies to return a "
                "(1, action_dim) chunk"
            )
        try:
            self.limits = replace(limits or ServerLimits(), **overrides)
        except TypeError as err:
            raise TypeError(
                f"{err}; PolicyServer keywords are ServerLimits fields: {list(asdict(ServerLimits()))}"
            ) from None
        if batch_window_ms < 0:
            raise ValueError(f"batch_window_ms={batch_window_ms} must be >= 0")
        self.policy = policy
        self.host = host
        self.port = port
        self.token = token or None
        self.batch_window_s = batch_window_ms / 1000.0
        self.metadata = {
            **describe_policy(policy),
            **_plain(dict(metadata or {})),
            "protocol_version": P.PROTOCOL_VERSION,
            "max_message_bytes": self.limits.max_message_bytes,
            "max_batch_size": self.limits.max_batch_size,
            "auth": self.token is not None,
        }
        self.stats: dict[str, int] = defaultdict(int)
        self._started = time.monotonic()
        self._connections = 0  # handlers running (the batcher waits only while one has no request in)
        self._admitted: set[ServerConnection] = set()  # upgrades accepted, counted against the cap
        self._auth_log = LogThrottle(self.limits.auth_log_interval_s, "rejected")
        self._refused_log = LogThrottle(self.limits.auth_log_interval_s, "refused")
        self._carry: deque[InferRequest] = deque()  # dequeued but did not fit the last batch
        self._queue: asyncio.Queue[InferRequest] | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def max_message_bytes(self) -> int:
        """Largest accepted frame (``limits.max_message_bytes``)."""
        return self.limits.max_message_bytes

    @property
    def max_batch_size(self) -> int:
        """Most observations per request and per policy call (``limits.max_batch_size``)."""
        return self.limits.max_batch_size

    @property
    def url(self) -> str:
        """``ws://host:port`` of the running server (the bound port when ``port=0`` was asked)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    async def serve(self, ready: threading.Event | None = None) -> None:
        """Serve until :meth:`stop` is called (or the task is cancelled)."""
        if self.host not in _LOOPBACK and self.token is None:
            logger.warning(
                "serving on %s without a token: anyone who can reach port %s can query the policy; "
                "pass --token (or set %s)",
                self.host,
                self.port,
                P.TOKEN_ENV,
            )
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._stop = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastvla-policy")
        batcher = asyncio.create_task(self._batch_loop())
        try:
            async with serve(
                self._handle,
                self.host,
                self.port,
                process_request=self._process_request,
                max_size=self.limits.max_message_bytes,
                # One request per connection is answered at a time; beyond max_queue buffered frames the
                # socket is not read, so a pipelining client is held back by TCP instead of our memory.
                max_queue=self.limits.max_queue,
                open_timeout=self.limits.handshake_timeout_s,
                close_timeout=min(5.0, self.limits.handshake_timeout_s),
                compression=None,  # deflate costs more CPU than it saves on images over a LAN
                ping_interval=20,
                ping_timeout=20,
            ) as server:
                self.port = server.sockets[0].getsockname()[1]
                logger.info("serving %s at %s", type(self.policy).__name__, self.url)
                if ready is not None:
                    ready.set()
                await self._stop.wait()
        finally:
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher
            self._executor.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (what ``fastvla serve`` calls)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, lambda: self._stop.set() if self._stop else task.cancel())
            await self.serve()

        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(main())

    def start(self, timeout: float = 10.0) -> str:
        """Serve from a background thread (tests, benchmarks, notebooks); returns :attr:`url`."""
        if self._thread is not None:
            raise RuntimeError(f"server already running at {self.url}")
        ready = threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self.serve(ready))
            except BaseException as err:
                errors.append(err)
                ready.set()

        self._thread = threading.Thread(target=target, name="fastvla-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or errors:
            self._thread = None
            raise RuntimeError(f"policy server failed to start on {self.host}:{self.port}") from (
                errors[0] if errors else None
            )
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start` (or running elsewhere) and wait for it to close."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP: health and auth
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == P.HEALTH_PATH:
            body = {
                "status": "ok",
                "policy": type(self.policy).__name__,
                "uptime_s": round(time.monotonic() - self._started, 1),
                "connections": self._connections,
                "stats": dict(self.stats),
            }
            response = connection.respond(http.HTTPStatus.OK, json.dumps(body) + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        if self.token is not None and not self._authorized(request):
            self.stats["auth_rejected"] += 1
            self._auth_log.warning(
                logger,
                "rejected a connection from %s: missing, repeated or wrong token",
                connection.remote_address,
            )
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                "send exactly one 'Authorization: Bearer <token>' header: pass RemotePolicy(url, token=...) "
                f"or set {P.TOKEN_ENV}\n",
            )
        # Connections whose handshake failed or that closed leave the set here (no leak, no race:
        # this runs on the event loop, between the check and the admission nothing else does).
        self._admitted = {c for c in self._admitted if c.state is not State.CLOSED}
        if len(self._admitted) >= self.limits.max_connections:
            self.stats["connections_refused"] += 1
            self._refused_log.warning(
                logger,
                "refused a connection from %s: %d connections open (max_connections=%d)",
                connection.remote_address,
                len(self._admitted),
                self.limits.max_connections,
            )
            response = connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"server at its connection limit (max_connections={self.limits.max_connections}); "
                "retry later\n",
            )
            response.headers["Retry-After"] = "1"
            return response
        self._admitted.add(connection)
        return None

    def _authorized(self, request: Request) -> bool:
        """Exactly one ``Authorization`` header, scheme ``Bearer`` (any case), the right token."""
        values = request.headers.get_all("Authorization")
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].strip().partition(" ")
        given = credentials.strip().encode("utf-8", "replace")
        # compare_digest even for a wrong scheme, so timing does not tell which part was wrong.
        return hmac.compare_digest(given, self.token.encode()) and scheme.lower() == "bearer"

    # ------------------------------------------------------------------ websocket: one client
    async def _handle(self, ws: ServerConnection) -> None:
        self._connections += 1
        peer = ws.remote_address
        logger.debug("client %s connected", peer)  # debug: a connection flood must not flood the log
        idle = self.limits.idle_timeout_s
        try:
            while True:
                try:
                    # Also ends a frame trickled in slowly: only a *complete* message resets the clock.
                    message = await asyncio.wait_for(ws.recv(), idle)
                except asyncio.TimeoutError:
                    self.stats["idle_closed"] += 1
                    await ws.close(1000, f"{P.IDLE_CLOSE_REASON} ({idle:g} s)")
                    return
                received = time.perf_counter()
                reply = await self._reply(message, received)
                try:
                    data = packb(reply)
                except TypeError as err:
                    data = packb(
                        self._error(reply.get("id"), P.SERVER_ERROR, f"reply not serialisable: {err}")
                    )
                await ws.send(data)
        except ConnectionClosed as err:
            # Oversized frames land here too (close code 1009); the server itself keeps serving.
            if err.sent is not None and err.sent.code == _CLOSE_TOO_BIG:
                self.stats["too_big_closed"] += 1
            logger.debug("client %s disconnected: %s", peer, err)
        finally:
            self._connections -= 1

    def _error(self, request_id: Any, code: str, message: str) -> dict[str, Any]:
        self.stats[f"errors_{code}"] += 1
        return {"type": P.ERROR, "id": request_id, "code": code, "message": message}

    async def _reply(self, message: bytes | str, received: float) -> dict[str, Any]:
        request_id = None
        try:
            if isinstance(message, str):
                raise BadRequest("expected a binary msgpack frame, got a text frame")
            msg = unpackb(message)
            if not isinstance(msg, dict):
                raise BadRequest(f"expected a msgpack map, got {type(msg).__name__}")
            request_id = msg.get("id")
            kind = msg.get("type")
            decoded = time.perf_counter()
            if kind == P.PING:
                return {"type": P.PONG, "id": request_id, "timing": {"server_ms": _ms(received)}}
            if kind == P.METADATA:
                return {"type": P.METADATA, "id": request_id, "metadata": self.metadata}
            if kind == P.INFER:
                reply = await self._infer(msg, received)
                reply["timing"]["decode_ms"] = (decoded - received) * 1000.0
                return reply
            raise BadRequest(
                f"unknown message type {kind!r}; expected one of {[P.PING, P.METADATA, P.INFER]}"
            )
        except (CodecError, BadRequest) as err:
            return self._error(request_id, P.BAD_REQUEST, str(err))
        except Exception as err:  # the policy raised: report it, keep serving
            logger.warning("request %s failed: %s: %s", request_id, type(err).__name__, err)
            return self._error(request_id, P.POLICY_ERROR, f"{type(err).__name__}: {err}")

    async def _infer(self, msg: dict[str, Any], received: float) -> dict[str, Any]:
        obs, task, batched = msg.get("obs"), msg.get("task"), msg.get("batched")
        want = msg.get("return", "chunk")
        if not isinstance(obs, dict) or not obs:
            raise BadRequest(f"'obs' must be a non-empty map of arrays, got {type(obs).__name__}")
        if not (task is None or isinstance(task, str) or _is_str_list(task)):
            raise BadRequest(f"'task' must be None, a string or a list of strings, got {task!r:.80}")
        if batched is not None and not isinstance(batched, bool):
            raise BadRequest(f"'batched' must be true, false or absent, got {batched!r}")
        if want not in ("chunk", "action"):
            raise BadRequest(f"'return' must be 'chunk' or 'action', got {want!r}")
        leaves = flatten(obs)
        size = infer_batch_size(leaves, task, batched) if leaves is not None else None
        validate_observation(obs, size, self.limits, self.metadata)
        request = InferRequest(obs, task, size, leaves, self._loop.create_future(), received)
        self.stats["requests"] += 1
        await self._queue.put(request)
        actions = await request.future
        request.timing["server_ms"] = _ms(received)
        if want == "action":
            action = actions[..., 0, :]
            return {"type": P.ACTION, "id": msg.get("id"), "action": action, "timing": request.timing}
        return {"type": P.ACTION_CHUNK, "id": msg.get("id"), "actions": actions, "timing": request.timing}

    # ------------------------------------------------------------------ batching
    async def _batch_loop(self) -> None:
        while True:
            batch = [self._carry.popleft() if self._carry else await self._queue.get()]
            deadline = self._loop.time() + self.batch_window_s
            n_samples = batch[0].n_samples
            while n_samples < self.max_batch_size:
                item = None
                with contextlib.suppress(asyncio.QueueEmpty):
                    item = self._queue.get_nowait()
                # Wait only while some connected client has nothing in this batch yet.
                remaining = deadline - self._loop.time()
                if item is None and remaining > 0 and self._connections > len(batch):
                    with contextlib.suppress(asyncio.TimeoutError):
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                if item is None:
                    break
                if n_samples + item.n_samples > self.max_batch_size:
                    self._carry.append(item)  # first in the next batch: order is kept
                    break
                batch.append(item)
                n_samples += item.n_samples
            try:
                await self._run_batch(batch)
            except Exception as err:  # a bug here must fail these requests, not stop the batcher
                logger.exception("batch of %d requests failed", len(batch))
                for request in batch:
                    _resolve(request.future, err)

    async def _run_batch(self, batch: list[InferRequest]) -> None:
        now = time.perf_counter()
        groups: dict[Any, list[InferRequest]] = defaultdict(list)
        for i, request in enumerate(batch):
            request.timing["queue_ms"] = (now - request.received) * 1000.0
            key = request.merge_key()
            groups[key if key is not None else ("alone", i)].append(request)
        for group in groups.values():
            await self._run_group(group)

    async def _run_group(self, group: list[InferRequest]) -> None:
        if len(group) > 1:
            start = time.perf_counter()
            try:
                obs, tasks = merge(group)
                actions = await self._call_policy(obs, tasks)
                parts = split(actions, group)
            except Exception as err:
                logger.info("batched call of %d requests failed (%s); retrying each alone", len(group), err)
            else:
                infer_ms = _ms(start)
                self.stats["batched_calls"] += 1
                for request, part in zip(group, parts):
                    request.timing.update(infer_ms=infer_ms, batch_requests=len(group))
                    _resolve(request.future, part)
                return
        for request in group:
            start = time.perf_counter()
            try:
                actions = await self._call_policy(request.obs, request.task)
            except Exception as err:
                _resolve(request.future, err)
            else:
                request.timing.update(infer_ms=_ms(start), batch_requests=1)
                _resolve(request.future, actions)

    async def _call_policy(self, obs: dict[str, Any], task: str | list[str] | None) -> np.ndarray:
        def call() -> np.ndarray:
            return _as_actions(self.policy.predict_action_chunk(obs, task=task))

        self.stats["policy_calls"] += 1
        return await self._loop.run_in_executor(self._executor, call)


def _resolve(future: asyncio.Future, value: Any) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
