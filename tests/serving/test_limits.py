"""Server limits: request validation, auth headers, connection cap, idle timeout, log throttling."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest
from serving_toy_policies import ToyPolicy, make_obs
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fastvla.serving import PolicyServer, RemotePolicy, ServerError, ServerUnavailableError
from fastvla.serving.cli import limits_from_args
from fastvla.serving.codec import packb, unpackb
from fastvla.serving.limits import BadRequest, LogThrottle, ServerLimits, validate_observation

TIMEOUT = 10.0
META = {"observation_map": {"cameras": {"front": "pixels/front"}, "state": "agent_pos"}, "state_dim": 5}


def _raw_infer(url: str, obs: dict, task=None, headers=None) -> dict:
    with connect(url, open_timeout=TIMEOUT, compression=None, additional_headers=headers) as ws:
        ws.send(packb({"type": "infer", "id": 1, "obs": obs, "task": task}))
        return unpackb(ws.recv(timeout=TIMEOUT))


@pytest.mark.parametrize(
    ("obs", "batch_size", "match"),
    [
        (make_obs(0, batch=9), 9, "carries 9 observations but the server's max_batch_size is 8"),
        ({"pixels": {"front": np.zeros((4000, 1, 1, 3), np.uint8)}}, None, "4000 observations"),
        ({**make_obs(0), "agent_pos": np.array([0, np.nan, 0, 0, 0], np.float32)}, 0, "'agent_pos' holds 1"),
        ({**make_obs(0), "pixels": {"front": np.full((8, 8, 3), np.inf)}}, 0, "'pixels/front' holds 192"),
        ({**make_obs(0), "extra": float("nan")}, 0, "'extra' is nan"),
        ({**make_obs(0), "big": np.zeros(5000, np.uint8)}, 0, "'big' is 5000 bytes"),
        ({**make_obs(0), "pixels": {"front": np.zeros((50, 50, 1), np.uint8)}}, 0, "50x50 pixels"),
        (
            {"agent_pos": np.zeros(5, np.float32)},
            0,
            "camera 'front' expects an image array at 'pixels/front'",
        ),
        ({**make_obs(0), "pixels": {"front": np.zeros((8, 8), np.uint8)}}, 0, r"must be \(H, W, 3\)"),
        ({**make_obs(0), "agent_pos": np.zeros(7, np.float32)}, 0, "expects 5 values"),
        ({"pixels": make_obs(0)["pixels"]}, 0, "state expected at 'agent_pos'"),
    ],
)
def test_validate_observation_names_the_problem(obs, batch_size, match) -> None:
    limits = ServerLimits(max_batch_size=8, max_array_bytes=4096, max_image_pixels=2000)
    with pytest.raises(BadRequest, match=match):
        validate_observation(obs, batch_size, limits, META)


def test_validate_observation_accepts_good_input_and_checks_image_size() -> None:
    limits = ServerLimits(max_batch_size=8)
    validate_observation(make_obs(0), 0, limits, META)
    validate_observation(make_obs(0, batch=8), 8, limits, META)
    strict = {**META, "image_size": [16, 16], "resize_images": False}
    with pytest.raises(BadRequest, match=r"images are \(8, 8\) but the policy expects \(16, 16\)"):
        validate_observation(make_obs(0), 0, limits, strict)
    validate_observation(make_obs(0), 0, limits, {**strict, "resize_images": True})


def test_limits_are_validated_and_reach_the_server() -> None:
    with pytest.raises(ValueError, match="max_connections=0"):
        ServerLimits(max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout_s=nan"):
        ServerLimits(idle_timeout_s=float("nan"))
    with pytest.raises(TypeError, match="ServerLimits fields"):
        PolicyServer(ToyPolicy(), max_frames=3)
    server = PolicyServer(ToyPolicy(), limits=ServerLimits(max_queue=2), max_batch_size=4)
    assert server.limits.max_queue == 2 and server.max_batch_size == 4
    assert server.metadata["max_batch_size"] == 4


def test_cli_flags_build_server_limits() -> None:
    from fastvla.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--policy", "p", "--max-connections", "3", "--idle-timeout-s", "2.5", "--max-queue", "2"]
    )
    limits = limits_from_args(args)
    assert (limits.max_connections, limits.idle_timeout_s, limits.max_queue) == (3, 2.5, 2)
    assert limits.max_batch_size == ServerLimits().max_batch_size


def test_bad_observations_are_bad_requests_and_never_reach_the_policy() -> None:
    policy = ToyPolicy()
    with PolicyServer(policy, port=0, max_batch_size=16) as server:
        bomb = {
            "pixels": {"front": np.zeros((4000, 1, 1, 3), np.uint8)},
            "agent_pos": np.zeros((4000, 5), np.float32),
        }
        start = time.perf_counter()
        reply = _raw_infer(server.url, bomb, ["x"] * 4000)
        assert reply["code"] == "bad_request" and "max_batch_size is 16" in reply["message"]
        assert time.perf_counter() - start < 2.0
        nan_state = {**make_obs(0), "agent_pos": np.full(5, np.nan, np.float32)}
        reply = _raw_infer(server.url, nan_state, "reach")
        assert reply["code"] == "bad_request" and "'agent_pos' holds 5 NaN/inf" in reply["message"]
        float_image = {**make_obs(0), "pixels": {"front": np.full((8, 8, 3), -np.inf, np.float32)}}
        reply = _raw_infer(server.url, float_image, "reach")
        assert reply["code"] == "bad_request" and "'pixels/front'" in reply["message"]
        with RemotePolicy(server.url, timeout=TIMEOUT) as remote:
            with pytest.raises(ServerError, match="camera 'front'") as info:
                remote.predict_action_chunk({"agent_pos": np.zeros(5, np.float32)}, task="reach")
            assert info.value.code == "bad_request"
            assert remote.predict_action_chunk(make_obs(1), task="reach").shape == (4, 3)
    assert policy.calls == [1]  # only the valid request ran


def test_batches_never_exceed_max_batch_size() -> None:
    policy = ToyPolicy()
    with PolicyServer(policy, port=0, max_batch_size=4, batch_window_ms=500) as server:
        clients = [RemotePolicy(server.url, timeout=TIMEOUT) for _ in range(3)]
        from test_server import _call_together

        requests = [(make_obs(i, batch=3), ["a", "b", "c"]) for i in range(3)]
        results = _call_together(clients, requests)
        for client in clients:
            client.close()
    for (obs, task), result in zip(requests, results):
        np.testing.assert_array_equal(result, ToyPolicy().predict_action_chunk(obs, task))
    assert sorted(policy.calls) == [3, 3, 3]


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ([("Authorization", "Bearer s3cret")], True),
        ([("Authorization", "bearer s3cret")], True),
        ([("Authorization", "BEARER  s3cret ")], True),
        ([("Authorization", "Bearer s3cret"), ("Authorization", "Bearer s3cret")], False),
        ([("Authorization", "Basic s3cret")], False),
        ([("Authorization", "Bearer")], False),
        ([("Authorization", "Bearer wrong")], False),
        ([], False),
    ],
)
def test_authorization_header_parsing(headers, ok) -> None:
    with PolicyServer(ToyPolicy(), port=0, token="s3cret") as server:
        if ok:
            assert _raw_infer(server.url, make_obs(0), "x", headers)["type"] == "action_chunk"
            return
        with pytest.raises(InvalidStatus) as info:
            _raw_infer(server.url, make_obs(0), "x", headers)
        assert info.value.response.status_code == 401  # never a 500 with a traceback
        assert b"Traceback" not in info.value.response.body


def test_rejected_logins_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastvla.serving.server")
    with PolicyServer(ToyPolicy(), port=0, token="s3cret", auth_log_interval_s=60) as server:
        for _ in range(20):
            with pytest.raises(InvalidStatus):
                _raw_infer(server.url, make_obs(0), "x", [("Authorization", "Bearer nope")])
        assert server.stats["auth_rejected"] == 20
    warnings = [r.getMessage() for r in caplog.records if "rejected a connection" in r.getMessage()]
    assert len(warnings) == 1 and "0 more rejected" in warnings[0]
    throttle = LogThrottle(0.05)
    assert [throttle.allow() for _ in range(3)] == [0, None, None]
    time.sleep(0.06)
    assert throttle.allow() == 2  # the next warning reports the suppressed ones


def test_connection_cap_refuses_cleanly_and_frees_slots() -> None:
    with PolicyServer(ToyPolicy(), port=0, max_connections=2) as server:
        a = RemotePolicy(server.url, timeout=TIMEOUT)
        b = RemotePolicy(server.url, timeout=TIMEOUT)
        with pytest.raises(ServerUnavailableError, match="connection limit"):
            RemotePolicy(server.url, timeout=TIMEOUT)
        # Handshakes that never complete do not hold a slot once they are dropped.
        host, port = server.url.removeprefix("ws://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an upgrade: answered 426 and closed
            raw.recv(1024)
        b.close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the server notices b's close asynchronously
            try:
                c = RemotePolicy(server.url, timeout=TIMEOUT)
                break
            except ServerUnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert c.predict_action_chunk(make_obs(0), "x").shape == (4, 3)
        assert a.predict_action_chunk(make_obs(1), "x").shape == (4, 3)
        assert server.stats["connections_refused"] >= 1
        a.close()
        c.close()


def test_idle_connections_are_closed_and_the_client_reconnects() -> None:
    server = PolicyServer(ToyPolicy(), port=0, idle_timeout_s=0.3)
    with server, RemotePolicy(server.url, timeout=TIMEOUT) as remote:
        first = remote._ws
        time.sleep(0.8)
        assert server.stats["idle_closed"] == 1
        obs = make_obs(3)
        np.testing.assert_array_equal(
            remote.predict_action_chunk(obs, "x"), ToyPolicy().predict_action_chunk(obs, "x")
        )
        assert remote._ws is not first  # a fresh connection, transparently
