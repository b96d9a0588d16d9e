"""Bounded hostile load: well-behaved clients keep being served while others abuse the server.

The server runs in its own process (its RSS is read from /proc) with small limits so each kind of abuse
hits its limit within seconds on a 2-core CPU machine. ``benchmarks/serve.py --hostile`` runs the same
load for longer with the default limits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from serving_toy_policies import make_obs

from fastvla.serving.stress import HostileLoad, run_hostile_load, spawn_server

HERE = Path(__file__).resolve().parent
MIB = 2**20
LIMITS = {
    "max_message_bytes": 2 * MIB,
    "max_batch_size": 16,
    "max_connections": 12,
    "max_queue": 1,
    "idle_timeout_s": 1.5,
    "handshake_timeout_s": 1.0,
}
# Buffered request memory is at most ~max_connections * (max_queue + 3) * max_message_bytes = 96 MiB
# here; in practice far less. The bound asserted below leaves room for allocator noise only.
RSS_GROWTH_BOUND_MIB = 64


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")
def test_well_behaved_clients_survive_hostile_load() -> None:
    start = time.perf_counter()
    server = spawn_server("serving_toy_policies:make_policy", pythonpath=[str(HERE)], **LIMITS)
    try:
        load = HostileLoad(duration_s=8.0, good_clients=3, bomb_samples=4000, slowloris=2, idle=6)
        result = run_hostile_load(server, make_obs, "reach", load, LIMITS["max_message_bytes"])
    finally:
        server.stop()
    print(result)
    good, hostile, rss, stats = result["good"], result["hostile"], result["rss_mib"], result["server_stats"]
    assert good["failed"] == 0, good["failure_examples"]
    assert good["requests_ok"] > 50
    assert good["p99_ms"] < 1000
    # Each kind of abuse met its limit.
    assert hostile.get("batch_bomb_bad_request", 0) > 0 and "batch_bomb_None" not in hostile
    assert hostile.get("frame_bomb_closed", 0) > 0 and "frame_bomb_answered" not in hostile
    assert stats.get("too_big_closed", 0) > 0
    assert hostile.get("pipeline_bad_request", 0) > 0
    # 3 good + 6 idle + 5 other hostile sockets want 14 slots of 12: the cap refused the surplus.
    assert stats.get("connections_refused", 0) > 0
    assert 0 < sum(v for k, v in hostile.items() if k.endswith("_http_503")) <= stats["connections_refused"]
    assert stats.get("idle_closed", 0) > 0  # idle sockets and trickled frames were closed
    assert hostile.get("slow_handshake_closed_by_server", 0) > 0
    # Trickling sockets are dropped after the handshake / idle timeout (+ the 0.5 s trickle period).
    held_handshake = hostile["slow_handshake_held_ms"] / hostile["slow_handshake_closed_by_server"] / 1000
    assert held_handshake < LIMITS["handshake_timeout_s"] + 1.5
    if hostile.get("slow_frame_closed_by_server"):
        held_frame = hostile["slow_frame_held_ms"] / hostile["slow_frame_closed_by_server"] / 1000
        assert held_frame < LIMITS["idle_timeout_s"] + 2.0
    assert stats.get("policy_calls", 0) >= good["requests_ok"] / 16  # bombs never reached the policy
    assert rss["after"] - rss["before"] < RSS_GROWTH_BOUND_MIB, rss
    assert rss["max_during_load"] - rss["before"] < RSS_GROWTH_BOUND_MIB, rss
    assert result["threads_alive"] == 0
    assert time.perf_counter() - start < 30.0
