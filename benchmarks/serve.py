"""Latency the policy server adds per call, against calling the same policy in-process.

For each observation size, times ``policy.predict_action_chunk`` in-process (the baseline) and through
``RemotePolicy`` over loopback websockets to a server in another process, as on a robot (msgpack encode,
send, server decode, batching queue, policy call in the worker thread, reply), then reports p50/p99 and
the added latency. A last row runs several
clients at once to show micro-batching. By default the policy is a constant one (pure serving overhead);
``--policy tiny`` serves an untrained tiny FastVLA model (real CPU inference), ``--policy PATH`` a checkpoint.

    python benchmarks/serve.py                 # or: fastvla bench serve
    python benchmarks/serve.py --calls 500 --json benchmarks/results/serve.json
    python benchmarks/serve.py --policy tiny --calls 50 --json benchmarks/results/serve-tiny.json
    python benchmarks/serve.py --hostile 60 --json benchmarks/results/serve-hostile.json

``--hostile SECONDS`` instead runs well-behaved clients (2 x 224x224 + state, 50 Hz each) against a server
with the default :class:`~fastvla.serving.limits.ServerLimits` while other clients abuse it (see
:mod:`fastvla.serving.stress`), and reports their latency, the refusals and the server's RSS.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fastvla.serving.client import RemotePolicy
from fastvla.serving.limits import ServerLimits

import _common

# name -> cameras (observation path, H, W); state "agent_pos" of 8 floats.
SCENARIOS = {
    "1 cam 96x96": [("pixels/front", 96, 96)],
    "2 cams 224x224": [("pixels/front", 224, 224), ("pixels/wrist", 224, 224)],
    "1 cam 480x640": [("pixels/top", 480, 640)],
}
CONCURRENT_SCENARIO = "2 cams 224x224"


class ConstantPolicy:
    """Returns a fixed (chunk, action_dim) chunk per observation: measures serving overhead alone."""

    def __init__(self, chunk: int = 8, action_dim: int = 7) -> None:
        self.chunk = np.linspace(-1, 1, chunk * action_dim, dtype=np.float32).reshape(chunk, action_dim)

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, obs: dict, task: Any = None) -> np.ndarray:
        images = next(iter(obs["pixels"].values()))
        if images.ndim == 4:  # a batch
            return np.broadcast_to(self.chunk, (images.shape[0], *self.chunk.shape)).copy()
        return self.chunk.copy()


class DeclaredConstantPolicy(ConstantPolicy):
    """A constant policy that declares its observation (2 cameras at 224x224, 8-D state) like
    ``FastVLAPolicy`` does, so the server validates requests against it."""

    state_dim = 8
    image_size = (224, 224)
    obs_map = SimpleNamespace(cameras={"front": "pixels/front", "wrist": "pixels/wrist"}, state="agent_pos")

    def __init__(self) -> None:
        super().__init__()
        self.processor = SimpleNamespace(resize_images=False)


def make_obs(
    cameras: list[tuple[str, int, int]], state: str = "agent_pos", state_dim: int = 8, seed: int = 0
) -> dict:
    """A random observation with images at the given ``/``-separated paths and a state vector."""
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {state: rng.standard_normal(state_dim).astype(np.float32)}
    for path, h, w in cameras:
        *parents, leaf = path.split("/")
        node = obs
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return obs


def policy_scenarios(policy: Any) -> dict[str, list[tuple[str, int, int]]]:
    """The observation a FastVLAPolicy expects: its cameras' paths at the model's image size."""
    config = policy.model.config
    h, w = (config.image_size, config.image_size) if isinstance(config.image_size, int) else config.image_size
    cams = [(policy.obs_map.cameras[c], h, w) for c in config.cameras]
    return {f"{type(policy).__name__} {len(cams)} cams {h}x{w}": cams}


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def time_calls(fn, obs: dict, calls: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn(obs, "pick up the cube")
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(obs, "pick up the cube")
        samples.append(time.perf_counter() - start)
    return samples


def time_interleaved(
    local, remote, obs: dict, calls: int, warmup: int = 10
) -> tuple[list[float], list[float]]:
    """Alternate in-process and remote calls so both see the same machine load (this CPU is shared)."""
    time_calls(local, obs, 0, warmup)
    time_calls(remote, obs, 0, warmup)
    local_s, remote_s = [], []
    for _ in range(calls):
        local_s += time_calls(local, obs, 1, warmup=0)
        remote_s += time_calls(remote, obs, 1, warmup=0)
    return local_s, remote_s


def concurrent_clients(url: str, obs: dict, n_clients: int, calls: int) -> dict[str, Any]:
    """``n_clients`` threads each make ``calls`` requests; returns per-call latency and throughput."""
    clients = [RemotePolicy(url, timeout=60) for _ in range(n_clients)]
    samples: list[list[float]] = [[] for _ in clients]
    barrier = threading.Barrier(n_clients)

    def worker(i: int) -> None:
        barrier.wait()
        samples[i] = time_calls(clients[i].predict_action_chunk, obs, calls, warmup=0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in clients:
        c.close()
    flat = [s for per in samples for s in per]
    return {**percentiles(flat), "calls_per_s": len(flat) / wall}


def serve_forever(port: int, batch_window_ms: float, policy_path: str | None) -> None:
    """Server process entry point (see :func:`start_server`); tuned like ``fastvla serve``."""
    from fastvla.serving.memory import tune_malloc
    from fastvla.serving.server import PolicyServer

    tune_malloc()
    policy = ConstantPolicy() if policy_path is None else _load(policy_path)
    if hasattr(policy, "model"):
        import torch

        torch.set_num_threads(1)  # client and server share 2 cores here: leave one to the client
    PolicyServer(policy, port=port, batch_window_ms=batch_window_ms).run()


def _load(path: str) -> Any:
    from fastvla.serving.cli import load_policy

    return load_policy(path, device="cpu")


def start_server(batch_window_ms: float, policy_path: str | None) -> tuple[subprocess.Popen, str]:
    """Run the server in its own process (as on a real deployment: no GIL shared with the client)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); from serve import serve_forever; "
        f"serve_forever({port}, {batch_window_ms!r}, {policy_path!r})"
    )
    # Run outside the repo root so our datasets/ folder cannot shadow Hugging Face datasets.
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=os.path.expanduser("~"), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc, f"ws://127.0.0.1:{port}"
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("benchmark server did not start") from None
            time.sleep(0.1)


def hostile(seconds: float, clients: int, json_path: str | None) -> dict[str, Any]:
    """Well-behaved clients against a default-limits server under hostile load; prints a table."""
    from fastvla.serving.stress import HostileLoad, run_hostile_load, spawn_server

    limits = ServerLimits()
    here = str(Path(__file__).resolve().parent)
    server = spawn_server("serve:DeclaredConstantPolicy", pythonpath=[here])
    cameras = SCENARIOS[CONCURRENT_SCENARIO]
    try:
        load = HostileLoad(duration_s=seconds, good_clients=clients)
        run = run_hostile_load(
            server, lambda i: make_obs(cameras, seed=i), "pick", load, limits.max_message_bytes
        )
    finally:
        server.stop()
    result = {
        "benchmark": "serve-hostile",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "limits": vars(limits),
        "load": {k: v for k, v in vars(load).items() if k != "counts"},
        **run,
    }
    print_hostile_table(result)
    if json_path:
        _common.write_json(json_path, result)
        print(f"\nwrote {json_path}")
    return result


def print_hostile_table(result: dict[str, Any]) -> None:
    good, rss = result["good"], result["rss_mib"]
    print(
        f"{result['duration_s']:.0f} s of hostile load, {good['clients']} well-behaved clients "
        f"({CONCURRENT_SCENARIO}), {os.cpu_count()} cores, "
        f"1-min load average {result['load_average_1min']:.1f}"
    )
    rows = [
        ("well-behaved requests ok / failed", f"{good['requests_ok']} / {good['failed']}"),
        ("latency p50 / p99 / max", f"{good['p50_ms']:.1f} / {good['p99_ms']:.1f} / {good['max_ms']:.1f} ms"),
        (
            "server RSS before / after / max",
            f"{rss['before']} / {rss['after']} / {rss['max_during_load']} MiB",
        ),
    ]
    rows += [(key, str(value)) for key, value in result["hostile"].items()]
    rows += [(f"server: {key}", str(value)) for key, value in result["server_stats"].items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = _common.parser(__doc__)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per scenario")
    parser.add_argument("--clients", type=int, default=4, help="clients in the concurrent row")
    parser.add_argument("--policy", default=None, help="checkpoint directory to serve instead of a constant")
    parser.add_argument("--batch-window-ms", type=float, default=2.0)
    parser.add_argument(
        "--tune-malloc", action="store_true", help="also call fastvla.serving.tune_malloc() in the client"
    )
    parser.add_argument("--json", default="benchmarks/results/serve.json", help="where to write results")
    parser.add_argument(
        "--hostile", type=float, default=None, metavar="SECONDS", help="run the hostile-load mode instead"
    )
    args = parser.parse_args(argv)
    if args.hostile is not None:
        json_path = (
            args.json if args.json != parser.get_default("json") else "benchmarks/results/serve-hostile.json"
        )
        return hostile(args.hostile, args.clients, json_path)
    if args.tune_malloc:
        from fastvla.serving.memory import tune_malloc

        tune_malloc()

    tmp = None
    if args.policy == "tiny":
        tmp = tempfile.TemporaryDirectory(prefix="fastvla-serve-bench-")
        args.policy = str(_common.save_tiny_policy(Path(tmp.name), image_size=96, state_dim=8))
    policy = ConstantPolicy() if args.policy is None else _load(args.policy)
    if hasattr(policy, "model"):
        import torch

        torch.set_num_threads(1)  # as in the server process: the baseline gets the same compute
    scenarios, state, state_dim = SCENARIOS, "agent_pos", 8
    if args.policy is not None:
        scenarios = policy_scenarios(policy)
        state, state_dim = policy.obs_map.state, policy.model.config.state_dim
    rows = []
    proc, url = start_server(args.batch_window_ms, args.policy)
    try:
        remote = RemotePolicy(url, timeout=60)
        for name, cameras in scenarios.items():
            obs = make_obs(cameras, state, state_dim)
            local_s, remote_s = time_interleaved(
                policy.predict_action_chunk, remote.predict_action_chunk, obs, args.calls
            )
            local, served = percentiles(local_s), percentiles(remote_s)
            server_ms = remote.last_timing.get("server_ms", float("nan"))
            rows.append(
                {
                    "scenario": name,
                    "request_kib": _request_kib(obs),
                    "in_process": local,
                    "remote": served,
                    "added_p50_ms": served["p50_ms"] - local["p50_ms"],
                    "added_p99_ms": served["p99_ms"] - local["p99_ms"],
                    "last_server_ms": server_ms,
                }
            )
        remote.close()
        concurrent_name = CONCURRENT_SCENARIO if args.policy is None else next(iter(scenarios))
        obs = make_obs(scenarios[concurrent_name], state, state_dim)
        single = concurrent_clients(url, obs, 1, args.calls // 2)
        batched_before = remote_stats(url)
        many = concurrent_clients(url, obs, args.clients, args.calls // 2)
        stats = {k: v - batched_before.get(k, 0) for k, v in remote_stats(url).items()}
    finally:
        proc.terminate()
        proc.wait(10)
        if tmp is not None:
            tmp.cleanup()
    result = {
        "benchmark": "serve",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "policy": type(policy).__name__,
        "calls": args.calls,
        "client_tune_malloc": args.tune_malloc,
        "batch_window_ms": args.batch_window_ms,
        "rows": rows,
        "concurrent_scenario": concurrent_name,
        "load_average_1min": os.getloadavg()[0],
        "concurrent": {"clients_1": single, f"clients_{args.clients}": many},
        "server_stats_concurrent_row": stats,
    }
    print_table(result, args.clients)
    if args.json:
        _common.write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


def remote_stats(url: str) -> dict[str, int]:
    """Request and policy-call counters from the server's health endpoint."""
    with urllib.request.urlopen(url.replace("ws://", "http://") + "/healthz", timeout=10) as response:
        return json.loads(response.read()).get("stats", {})


def _request_kib(obs: dict) -> float:
    from fastvla.serving.codec import packb

    return len(packb({"type": "infer", "id": 1, "obs": obs, "task": "pick up the cube"})) / 1024


def print_table(result: dict[str, Any], n_clients: int) -> None:
    print(
        f"policy: {result['policy']}, {result['calls']} calls per row, client tune_malloc "
        f"{result['client_tune_malloc']}, server in another process on "
        f"loopback; 1-min load average {result['load_average_1min']:.1f} on {os.cpu_count()} cores"
    )
    width = max(16, *(len(r["scenario"]) for r in result["rows"]))
    header = f"{'scenario':<{width}} {'KiB':>7} {'local p50':>10} {'local p99':>10} {'remote p50':>11} "
    header += f"{'remote p99':>11} {'added p50':>10} {'added p99':>10}"
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        loc, rem = r["in_process"], r["remote"]
        print(
            f"{r['scenario']:<{width}} {r['request_kib']:>7.0f} "
            f"{loc['p50_ms']:>8.3f}ms {loc['p99_ms']:>8.3f}ms "
            f"{rem['p50_ms']:>9.3f}ms {rem['p99_ms']:>9.3f}ms "
            f"{r['added_p50_ms']:>8.3f}ms {r['added_p99_ms']:>8.3f}ms"
        )
    stats = result["server_stats_concurrent_row"]
    c = result["concurrent"]
    one, many = c["clients_1"], c[f"clients_{n_clients}"]
    window = result["batch_window_ms"]
    print(f"\n{result['concurrent_scenario']}, concurrent clients (batch window {window} ms):")
    print(
        f"  1 client : p50 {one['p50_ms']:.3f} ms, p99 {one['p99_ms']:.3f} ms, "
        f"{one['calls_per_s']:.0f} calls/s"
    )
    print(
        f"  {n_clients} clients: p50 {many['p50_ms']:.3f} ms, p99 {many['p99_ms']:.3f} ms, "
        f"{many['calls_per_s']:.0f} calls/s; {stats.get('requests', 0)} requests answered by "
        f"{stats.get('policy_calls', 0)} policy calls"
    )


if __name__ == "__main__":
    main()
