"""The policy server on loopback: exact round trips, batching, auth, malformed input, dead servers."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
from serving_toy_policies import ToyPolicy, make_obs
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fastvla.serving import (
    AuthenticationError,
    MessageTooLargeError,
    PolicyServer,
    RemotePolicy,
    ServerError,
    ServerTimeoutError,
    ServerUnavailableError,
)
from fastvla.serving.codec import packb, unpackb

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def toy_server() -> Iterator[PolicyServer]:
    server = PolicyServer(ToyPolicy(), port=0, max_message_bytes=64 * 1024)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def remote(toy_server: PolicyServer) -> Iterator[RemotePolicy]:
    with RemotePolicy(toy_server.url, timeout=TIMEOUT) as policy:
        yield policy


def test_round_trip_equals_local_policy(toy_server: PolicyServer, remote: RemotePolicy) -> None:
    local = ToyPolicy()
    for seed, task in [(0, "pick up the red cube"), (1, None)]:
        obs = make_obs(seed)
        chunk = remote.predict_action_chunk(obs, task=task)
        assert chunk.dtype == np.float32 and chunk.shape == (4, 3)
        np.testing.assert_array_equal(chunk, local.predict_action_chunk(obs, task))
    batch = make_obs(2, batch=3)
    tasks = ["a", "b", "c"]
    np.testing.assert_array_equal(
        remote.predict_action_chunk(batch, task=tasks), local.predict_action_chunk(batch, tasks)
    )
    timing = remote.last_timing
    assert {"server_ms", "queue_ms", "infer_ms", "round_trip_ms", "batch_requests"} <= set(timing)
    assert 0 < timing["infer_ms"] <= timing["server_ms"] <= timing["round_trip_ms"]


def test_select_action_executes_n_action_steps_of_each_chunk(remote: RemotePolicy) -> None:
    local = ToyPolicy()
    assert remote.n_action_steps == local.n_action_steps == 2  # taken from the server's metadata
    remote.reset()
    for step in range(5):
        obs = make_obs(100 + step)
        chunk_obs = make_obs(100 + step - step % 2)  # a new chunk every 2 steps, from that step's obs
        expected = local.predict_action_chunk(chunk_obs, "push")[step % 2]
        np.testing.assert_array_equal(remote.select_action(obs, task="push"), expected)
    remote.reset()  # a new episode starts with a fresh chunk
    np.testing.assert_array_equal(
        remote.select_action(make_obs(7), "push"), local.predict_action_chunk(make_obs(7), "push")[0]
    )


def test_metadata_ping_and_health(toy_server: PolicyServer, remote: RemotePolicy) -> None:
    assert remote.metadata["policy_class"] == "ToyPolicy"
    assert remote.metadata["max_message_bytes"] == 64 * 1024 and remote.metadata["auth"] is False
    assert remote.ping() > 0
    url = toy_server.url.replace("ws://", "http://") + "/healthz"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"


def _raw_exchange(url: str, frames: list[bytes | str]) -> list[dict]:
    with connect(url, open_timeout=TIMEOUT, compression=None) as ws:
        replies = []
        for frame in frames:
            ws.send(frame)
            replies.append(unpackb(ws.recv(timeout=TIMEOUT)))
        return replies


def test_malformed_messages_get_errors_and_the_connection_keeps_serving(toy_server: PolicyServer) -> None:
    bad_array = msgpack.packb(
        {"type": "infer", "id": 6, "obs": {"x": msgpack.ExtType(1, b"\x03<f4\x01" + b"\xff" * 8 + b"\x00")}}
    )
    frames = [
        b"\xc1\x00garbage",
        "a text frame",
        packb([1, 2, 3]),
        packb({"type": "fly", "id": 3}),
        packb({"type": "infer", "id": 4}),
        packb({"type": "infer", "id": 5, "obs": make_obs(0), "task": 7}),
        bad_array,
        packb({"type": "infer", "id": 8, "obs": {"wrong_key": np.zeros(3, np.float32)}}),
        packb({"type": "infer", "id": 9, "obs": make_obs(0), "task": "pick"}),
    ]
    replies = _raw_exchange(toy_server.url, frames)
    codes = [r.get("code") for r in replies]
    # A wrong observation key is the client's mistake, caught before the policy runs.
    assert codes == ["bad_request"] * 8 + [None]
    assert [r["id"] for r in replies[3:]] == [3, 4, 5, None, 8, 9]  # an undecodable frame has no id
    assert "'pixels/front'" in replies[7]["message"] and "wrong_key" in replies[7]["message"]
    assert "'fly'" in replies[3]["message"]
    np.testing.assert_array_equal(
        replies[-1]["actions"], ToyPolicy().predict_action_chunk(make_obs(0), "pick")
    )


def test_policy_errors_reach_the_client(remote: RemotePolicy) -> None:
    with pytest.raises(ServerError, match="RuntimeError: the policy exploded") as info:
        remote.predict_action_chunk(make_obs(0), task="explode")
    assert info.value.code == "policy_error"
    assert remote.predict_action_chunk(make_obs(0)).shape == (4, 3)  # same connection still works


def test_oversized_messages(toy_server: PolicyServer, remote: RemotePolicy) -> None:
    big = {"pixels": {"front": np.zeros((200, 200, 3), np.uint8)}, "agent_pos": np.zeros(5, np.float32)}
    with pytest.raises(MessageTooLargeError, match="max_message_bytes=65536"):
        remote.predict_action_chunk(big)  # refused before sending
    # A client that ignores the bound gets its connection closed with 1009 (message too big).
    with connect(toy_server.url, open_timeout=TIMEOUT, compression=None, max_size=None) as ws:
        ws.send(packb({"type": "infer", "id": 1, "obs": big}))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.rcvd.code == 1009
    assert remote.predict_action_chunk(make_obs(0)).shape == (4, 3)  # the server survives


def _call_together(policies: list[RemotePolicy], requests: list[tuple[dict, object]]) -> list[object]:
    barrier = threading.Barrier(len(policies))
    results: list[object] = [None] * len(policies)

    def worker(i: int) -> None:
        barrier.wait(TIMEOUT)
        try:
            results[i] = policies[i].predict_action_chunk(*requests[i])
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(policies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * TIMEOUT)
    return results


def test_concurrent_clients_are_batched_into_one_policy_call() -> None:
    policy = ToyPolicy()
    # A long window makes the merge deterministic: the batcher waits while a connected client is missing.
    with PolicyServer(policy, port=0, batch_window_ms=2000) as server:
        clients = [RemotePolicy(server.url, timeout=TIMEOUT) for _ in range(3)]
        requests = [(make_obs(0), "pick"), (make_obs(1, batch=2), ["place", "stack"]), (make_obs(2), None)]
        start = time.perf_counter()
        results = _call_together(clients, requests)
        elapsed = time.perf_counter() - start
        for client in clients:
            client.close()
    for (obs, task), result in zip(requests, results):
        np.testing.assert_array_equal(result, ToyPolicy().predict_action_chunk(obs, task))
    # pick + (place, stack) stack into one call of 3; the default-task request cannot join them.
    assert sorted(policy.calls) == [1, 3]
    assert elapsed < 2.0  # nobody waited for the full window once every client had a request in


def test_auth() -> None:
    with PolicyServer(ToyPolicy(), port=0, token="s3cret") as server:
        for token in (None, "wrong"):
            with pytest.raises(AuthenticationError, match="401"):
                RemotePolicy(server.url, token=token, timeout=TIMEOUT)
        with RemotePolicy(server.url, token="s3cret", timeout=TIMEOUT) as remote:
            assert remote.metadata["auth"] is True
            assert remote.predict_action_chunk(make_obs(0)).shape == (4, 3)
        health = server.url.replace("ws://", "http://") + "/healthz"
        with urllib.request.urlopen(health, timeout=TIMEOUT) as response:  # health needs no token
            assert response.status == 200
        assert server.stats["auth_rejected"] == 2


def test_slow_server_times_out_cleanly_and_the_client_recovers() -> None:
    policy = ToyPolicy(delay_s=0.6)
    with PolicyServer(policy, port=0) as server, RemotePolicy(server.url, timeout=0.3) as remote:
        start = time.perf_counter()
        with pytest.raises(ServerTimeoutError, match=r"within 0\.3 s"):
            remote.predict_action_chunk(make_obs(0))
        assert time.perf_counter() - start < 3.0
        remote.timeout = TIMEOUT  # reconnects; the late reply of the abandoned request is not mistaken
        obs = make_obs(5)
        np.testing.assert_array_equal(remote.predict_action_chunk(obs), ToyPolicy().predict_action_chunk(obs))


def test_unreachable_server_and_bad_arguments() -> None:
    with pytest.raises(ServerUnavailableError, match="is `fastvla serve` running"):
        RemotePolicy("ws://127.0.0.1:9", timeout=2.0)
    with pytest.raises(ValueError, match="ws://"):
        RemotePolicy("http://127.0.0.1:8000")
    with pytest.raises(TypeError, match="predict_action_chunk"):
        PolicyServer(object())


def test_a_failing_batch_fails_its_requests_and_the_batcher_lives_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastvla.serving.batching import InferRequest

    original = InferRequest.merge_key
    with PolicyServer(ToyPolicy(), port=0) as server, RemotePolicy(server.url, timeout=TIMEOUT) as remote:
        monkeypatch.setattr(InferRequest, "merge_key", lambda self: 1 / 0)
        with pytest.raises(ServerError, match="ZeroDivisionError"):
            remote.predict_action_chunk(make_obs(0))
        monkeypatch.setattr(InferRequest, "merge_key", original)
        assert remote.predict_action_chunk(make_obs(0)).shape == (4, 3)
