"""Hostile load against a policy server: well-behaved clients keep working while others misbehave.

Used by the bounded test in ``tests/serving/test_hostile_load.py`` (seconds) and by
``benchmarks/serve.py --hostile`` (longer, writes JSON). The server runs in its own process
(:func:`spawn_server`) so its resident memory can be read from ``/proc`` while:

* ``good`` clients (:class:`~fastvla.serving.client.RemotePolicy`) ask for action chunks in a loop;
* a *batch bomb* sends requests of thousands of 1x1 images (the server must refuse them unrun);
* a *frame bomb* sends frames over ``max_message_bytes`` (closed with 1009 from the frame header);
* a *pipeliner* sends several near-limit frames without reading replies (bounded by ``max_queue``);
* *slowloris* sockets trickle an HTTP upgrade request, or a websocket frame, a byte at a time;
* *idle* sockets open websocket connections and never send (refused beyond ``max_connections``,
  closed after ``idle_timeout_s``).

Every actor is throttled with short sleeps so the load fits a 2-core machine; the point is the
server's behaviour under each kind of abuse, not its peak throughput.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fastvla.serving.client import RemotePolicy, _connect_kwargs
from fastvla.serving.codec import packb, unpackb


def rss_bytes(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a Linux process in bytes: resident memory now and its peak."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass
class ServerProcess:
    """A policy server in a child process (see :func:`spawn_server`)."""

    proc: subprocess.Popen
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        """The server's ``/healthz`` answer."""
        health = self.url.replace("ws://", "http://") + "/healthz"
        with urllib.request.urlopen(health, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_server(
    policy_spec: str,
    pythonpath: Sequence[str] = (),
    startup_s: float = 60.0,
    **limits: Any,
) -> ServerProcess:
    """Serve ``policy_spec`` (``module:attribute``) on a free loopback port in another process.

    Runs as ``fastvla serve`` does (``tune_malloc()``, then :meth:`PolicyServer.run`) without importing
    the other CLI modules. ``limits`` are :class:`~fastvla.serving.limits.ServerLimits` fields.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import json, sys\n"
        "from fastvla.serving.cli import load_policy\n"
        "from fastvla.serving.memory import tune_malloc\n"
        "from fastvla.serving.server import PolicyServer\n"
        "tune_malloc()\n"
        "PolicyServer(load_policy(sys.argv[1]), port=int(sys.argv[2]), **json.loads(sys.argv[3])).run()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, os.environ.get("PYTHONPATH", "")])}
    # cwd outside any repo root: `python -c` puts the cwd on sys.path, where datasets/ would shadow HF's.
    proc = subprocess.Popen(
        [sys.executable, "-c", code, policy_spec, str(port), json.dumps(limits)],
        cwd=os.path.expanduser("~"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = ServerProcess(proc, f"ws://127.0.0.1:{port}")
    deadline = time.monotonic() + startup_s
    while True:
        try:
            server.stats()
            return server
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"server did not start: {proc.communicate()[1].decode()[-2000:]}"
                ) from None
            time.sleep(0.1)


@dataclass
class HostileLoad:
    """What runs against the server, and for how long.

    Attributes:
        duration_s: Wall time of the load phase.
        good_clients: Well-behaved :class:`RemotePolicy` clients, connected before the hostile actors.
        good_interval_s: Pause between a good client's requests (a control loop's period).
        bomb_samples: 1x1 images per batch-bomb request.
        pipeline_depth: Near-limit frames the pipeliner sends before reading the replies.
        slowloris: Sockets trickling a handshake and sockets trickling a frame (each).
        idle: Websocket connections opened and never used (reopened when closed or refused).
    """

    duration_s: float = 10.0
    good_clients: int = 3
    good_interval_s: float = 0.02
    bomb_samples: int = 4000
    pipeline_depth: int = 6
    slowloris: int = 4
    idle: int = 8
    counts: Counter = field(default_factory=Counter)


def _close_quietly(sock: Any) -> None:
    with contextlib.suppress(Exception):  # a hostile socket may be in any state
        sock.close()


def run_hostile_load(
    server: ServerProcess,
    make_obs: Callable[[int], dict],
    task: str | None,
    load: HostileLoad,
    max_message_bytes: int,
) -> dict[str, Any]:
    """Run ``load`` against ``server``; returns latencies, failures, hostile outcomes and server RSS.

    ``make_obs(seed)`` builds the well-behaved clients' observation; ``max_message_bytes`` is the
    server's limit (the frame bomb exceeds it, the pipeliner stays just under it).
    """
    counts = load.counts
    lock = threading.Lock()
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    rss_samples: list[int] = []

    def bump(key: str, n: int = 1) -> None:
        with lock:
            counts[key] += n

    goods = [RemotePolicy(server.url, timeout=30.0) for _ in range(load.good_clients)]

    def good(i: int) -> None:
        obs = make_obs(i)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                chunk = goods[i].predict_action_chunk(obs, task=task)
                if not np.all(np.isfinite(chunk)):
                    raise ValueError("non-finite actions")
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as err:  # every failure is counted and reported
                with lock:
                    failures.append(f"{type(err).__name__}: {err}")
            stop.wait(load.good_interval_s)

    def batch_bomb() -> None:
        bomb = {
            "pixels": {"front": np.zeros((load.bomb_samples, 1, 1, 3), np.uint8)},
            "agent_pos": np.zeros((load.bomb_samples, 5), np.float32),
        }
        frame = packb({"type": "infer", "id": 1, "obs": bomb, "task": ["x"] * load.bomb_samples})
        while not stop.is_set():
            try:
                with connect(
                    server.url, open_timeout=10, max_size=None, compression=None, **_connect_kwargs()
                ) as ws:
                    while not stop.is_set():
                        ws.send(frame)
                        bump(f"batch_bomb_{unpackb(ws.recv(timeout=30)).get('code')}")
                        stop.wait(0.05)
            except InvalidStatus as err:
                bump(f"batch_bomb_http_{err.response.status_code}")
            except Exception:
                bump("batch_bomb_dropped")
            stop.wait(0.2)

    def frame_bomb() -> None:
        junk = b"\x00" * (max_message_bytes + 1)
        while not stop.wait(0.3):
            try:
                with connect(server.url, open_timeout=10, compression=None, **_connect_kwargs()) as ws:
                    bump("frame_bomb_sent")
                    ws.send(junk)
                    ws.recv(timeout=10)
                    bump("frame_bomb_answered")  # must not happen
            except InvalidStatus as err:
                bump(f"frame_bomb_http_{err.response.status_code}")
            except Exception:  # closed by the server (1009), as it should
                bump("frame_bomb_closed")

    def pipeliner() -> None:
        payload = {"junk": np.zeros(max_message_bytes - 4096, np.uint8)}
        frame = packb({"type": "infer", "id": 1, "obs": payload})
        while not stop.wait(0.5):
            try:
                with connect(server.url, open_timeout=10, compression=None, **_connect_kwargs()) as ws:
                    for _ in range(load.pipeline_depth):
                        ws.send(frame)  # blocks once the server stops reading: TCP back-pressure
                    bump("pipeline_frames_sent", load.pipeline_depth)
                    for _ in range(load.pipeline_depth):
                        bump(f"pipeline_{unpackb(ws.recv(timeout=30)).get('code')}")
            except InvalidStatus as err:
                bump(f"pipeline_http_{err.response.status_code}")
            except Exception:
                bump("pipeline_dropped")

    def open_ws(name: str, backoff_s: float) -> Any | None:
        """A websocket to the server, or None (counted under ``name``) after a ``backoff_s`` pause."""
        try:
            return connect(server.url, open_timeout=10, compression=None, **_connect_kwargs())
        except InvalidStatus as err:  # refused at the connection cap
            bump(f"{name}_http_{err.response.status_code}")
        except Exception:
            bump(f"{name}_connect_failed")
        stop.wait(backoff_s)
        return None

    def trickle(name: str, sock: Any, first: bytes, more: bytes) -> None:
        """Send ``first``, then ``more`` every 0.5 s until the server drops ``sock`` or the load ends."""
        opened = time.monotonic()
        try:
            sock.sendall(first)
            while not stop.wait(0.5):
                sock.sendall(more)
            bump(f"{name}_survived")
        except OSError:
            bump(f"{name}_closed_by_server")
            bump(f"{name}_held_ms", int((time.monotonic() - opened) * 1000))
        finally:
            _close_quietly(sock)

    host, port = server.url.removeprefix("ws://").rsplit(":", 1)

    def slow_handshake() -> None:
        while not stop.is_set():
            sock = socket.create_connection((host, int(port)), timeout=30)
            trickle("slow_handshake", sock, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X")  # headers never end

    def slow_frame() -> None:
        # A masked binary frame announcing 65535 bytes, then its payload a byte at a time.
        header = struct.pack("!BBH4s", 0x82, 0x80 | 126, 65535, b"mask")
        while not stop.is_set():
            ws = open_ws("slow_frame", 0.5)
            if ws is not None:
                trickle("slow_frame", ws.socket, header + b"\x00", b"\x00")

    def idle() -> None:
        while not stop.is_set():
            ws = open_ws("idle", 0.25)
            if ws is None:
                continue
            bump("idle_opened")
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        ws.recv(timeout=0.5)  # nothing comes but the server's close
            except Exception as err:  # ConnectionClosed: closed for idleness
                code = getattr(getattr(err, "rcvd", None), "code", None)
                bump(f"idle_closed_by_server_{code}")
            finally:
                _close_quietly(ws)

    def sample_rss() -> None:
        while not stop.wait(0.1):
            rss_samples.append(rss_bytes(server.pid)[0])

    for remote in goods:  # warm-up: every good client is connected before the abuse starts
        remote.predict_action_chunk(make_obs(0), task=task)
    rss_before = rss_bytes(server.pid)[0]
    actors: list[Callable[[], None]] = [sample_rss, batch_bomb, frame_bomb, pipeliner]
    actors += [slow_handshake, slow_frame] * load.slowloris + [idle] * load.idle
    threads = [threading.Thread(target=lambda i=i: good(i), daemon=True) for i in range(load.good_clients)]
    threads += [threading.Thread(target=actor, daemon=True) for actor in actors]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(load.duration_s)
    stop.set()
    for thread in threads:
        thread.join(30)
    wall = time.perf_counter() - started
    for remote in goods:
        remote.close()
    rss_after, rss_peak_ever = rss_bytes(server.pid)
    ms = np.asarray(latencies) * 1000.0 if latencies else np.asarray([np.nan])
    mib = 2.0**20
    return {
        "duration_s": round(wall, 2),
        "good": {
            "clients": load.good_clients,
            "requests_ok": len(latencies),
            "failed": len(failures),
            "failure_examples": failures[:5],
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        },
        "hostile": dict(sorted(counts.items())),
        "rss_mib": {
            "before": round(rss_before / mib, 1),
            "after": round(rss_after / mib, 1),
            "max_during_load": round(max(rss_samples, default=rss_after) / mib, 1),
            "peak_since_start": round(rss_peak_ever / mib, 1),
        },
        "server_stats": server.stats().get("stats", {}),
        "threads_alive": sum(t.is_alive() for t in threads),
    }
