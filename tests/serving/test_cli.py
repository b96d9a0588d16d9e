"""``fastvla serve`` in a subprocess: served from the command line, then SIGKILLed mid-episode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_toy_policies import ToyPolicy, make_obs

from fastvla.cli import build_parser
from fastvla.serving import RemotePolicyError, ServerDisconnectedError
from fastvla.serving.cli import load_policy
from fastvla.serving.client import RemotePolicy
from fastvla.serving.config import ServeConfig
from fastvla.utils.flags import config_from_args

HERE = Path(__file__).resolve().parent
STARTUP_S = 60.0  # imports every CLI module (torch included) on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env["TOY_POLICY_DELAY_S"] = "0.5"
    cmd = [sys.executable, "-m", "fastvla", "serve", "--policy", "serving_toy_policies:make_slow_policy"]
    # cwd outside the repo: `python -m` puts the cwd on sys.path, where datasets/ would shadow HF datasets.
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    health = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"`fastvla serve` did not come up: {proc.communicate()[1].decode()[-2000:]}")
            time.sleep(0.2)
    yield proc, f"ws://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    proc.stderr.close()


@pytest.mark.slow
def test_server_killed_mid_episode_raises_instead_of_hanging(served) -> None:
    proc, url = served
    remote = RemotePolicy(url, timeout=20.0)  # long timeout: the error must come from the dead socket
    local = ToyPolicy()
    remote.reset()
    for step in range(3):
        action = remote.select_action(make_obs(step), task="reach")
        np.testing.assert_array_equal(
            action, local.predict_action_chunk(make_obs(step - step % 2), "reach")[step % 2]
        )

    outcome: list[BaseException | None] = []

    def request() -> None:
        try:
            remote.predict_action_chunk(make_obs(9), task="reach")
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=request)
    start = time.perf_counter()
    thread.start()
    time.sleep(0.2)  # the server is inside its 0.5 s policy call
    proc.send_signal(signal.SIGKILL)
    thread.join(20.0)
    elapsed = time.perf_counter() - start
    assert not thread.is_alive(), "the client hung after the server died"
    assert isinstance(outcome[0], ServerDisconnectedError), outcome
    assert "was the server stopped or killed" in str(outcome[0])
    assert elapsed < 5.0
    # Later calls fail fast and clearly too (reconnect is refused).
    remote.reset()
    with pytest.raises(RemotePolicyError, match="cannot connect"):
        remote.select_action(make_obs(10), task="reach")


def test_serve_command_is_registered() -> None:
    args = build_parser().parse_args(
        ["serve", "--policy", "ckpt", "--token", "t", "--max-message-bytes", "2048", "--load-in-4bit"]
    )
    cfg = config_from_args(args, ServeConfig)
    assert cfg.host == "127.0.0.1" and cfg.port == 8000  # loopback unless told otherwise
    assert cfg.token == "t" and cfg.limits.max_message_bytes == 2048 and cfg.load_in_4bit


def test_load_policy_specs(tmp_path: Path) -> None:
    assert isinstance(load_policy("serving_toy_policies:make_policy"), ToyPolicy)
    assert isinstance(load_policy("serving_toy_policies:ToyPolicy"), ToyPolicy)
    with pytest.raises(ValueError, match="neither a checkpoint directory"):
        load_policy(str(tmp_path / "missing"))


def test_tune_malloc_applies_on_glibc() -> None:
    import platform

    from fastvla.serving import tune_malloc

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning is glibc-only")
    assert tune_malloc() is True
