"""Serving a real (tiny) FastVLAPolicy saved to disk: the remote client acts exactly like the local one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fastvla import model as model_mod
from fastvla import policies
from fastvla.serving import PolicyServer, RemotePolicy
from fastvla.serving.cli import load_policy

CAMERAS, STATE_DIM, ACTION_DIM, CHUNK, IMAGE = ["front", "wrist"], 6, 4, 6, 32


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_fastvla")
    torch.manual_seed(0)
    kw = {"cameras": CAMERAS, "state_dim": STATE_DIM, "action_dim": ACTION_DIM, "chunk_size": CHUNK}
    model = model_mod.FastVLAModel.from_preset("tiny", image_size=IMAGE, **kw)
    stats = {
        "observation.state": {"mean": [0.0] * STATE_DIM, "std": [1.0] * STATE_DIM},
        "action": {"min": [-2.0] * ACTION_DIM, "max": [2.0] * ACTION_DIM},
    }
    processor = model_mod.FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _obs(seed: int, batch: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return {
        "pixels": {c: rng.integers(0, 256, (*lead, IMAGE, IMAGE, 3), dtype=np.uint8) for c in CAMERAS},
        "agent_pos": rng.standard_normal((*lead, STATE_DIM)).astype(np.float32),
    }


@pytest.mark.slow
def test_remote_fastvla_policy_matches_local(tiny_dir: Path) -> None:
    local = policies.FastVLAPolicy.from_pretrained(tiny_dir, device="cpu", n_action_steps=3)
    served = load_policy(str(tiny_dir), device="cpu")  # what `fastvla serve --policy DIR` loads
    served.n_action_steps = 3
    with PolicyServer(served, port=0, batch_window_ms=1000) as server:
        remote = RemotePolicy(server.url, timeout=60)
        meta = remote.metadata
        assert meta["policy_class"] == "FastVLAPolicy" and meta["cameras"] == CAMERAS
        assert (meta["action_dim"], meta["chunk_size"], meta["state_dim"]) == (ACTION_DIM, CHUNK, STATE_DIM)
        assert remote.n_action_steps == 3

        task = "pick up the red cube"
        np.testing.assert_array_equal(
            remote.predict_action_chunk(_obs(0), task), local.predict_action_chunk(_obs(0), task)
        )
        batch_tasks = ["push", "reach"]
        np.testing.assert_allclose(
            remote.predict_action_chunk(_obs(1, batch=2), batch_tasks),
            local.predict_action_chunk(_obs(1, batch=2), batch_tasks),
            atol=1e-5,
        )
        # Receding horizon: the same action sequence as the local policy's own queue.
        local.reset()
        remote.reset()
        for step in range(5):
            np.testing.assert_array_equal(
                remote.select_action(_obs(10 + step), task), local.select_action(_obs(10 + step), task)
            )

        # Two clients at once share one forward pass and still get their own actions.
        other = RemotePolicy(server.url, timeout=60)
        results: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(2)

        def ask(i: int, client: RemotePolicy) -> None:
            barrier.wait(30)
            results[i] = client.predict_action_chunk(_obs(20 + i), task)

        threads = [threading.Thread(target=ask, args=(i, c)) for i, c in enumerate([remote, other])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i in range(2):
            np.testing.assert_allclose(results[i], local.predict_action_chunk(_obs(20 + i), task), atol=1e-5)
        assert remote.last_timing["batch_requests"] == 2
        remote.close()
        other.close()
