"""Small deterministic policies for the serving tests (no torch)."""

from __future__ import annotations

import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np

CHUNK, ACTION_DIM, STATE_DIM, IMAGE = 4, 3, 5, 8


def make_obs(seed: int, batch: int | None = None) -> dict:
    """A Gymnasium-style observation: one camera plus a state vector (optionally batched)."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return {
        "pixels": {"front": rng.integers(0, 256, (*lead, IMAGE, IMAGE, 3), dtype=np.uint8)},
        "agent_pos": rng.standard_normal((*lead, STATE_DIM)).astype(np.float32),
    }


class ToyPolicy:
    """Actions depend on every input (image, state, task) and on the position in the chunk.

    Records the batch size of each ``predict_action_chunk`` call so tests can see server-side batching.
    Declares its observation like ``FastVLAPolicy`` (``obs_map``, ``state_dim``), so the server validates
    requests against it. The task ``"explode"`` makes it raise (a genuine policy error).
    """

    state_dim = STATE_DIM
    obs_map = SimpleNamespace(cameras={"front": "pixels/front"}, state="agent_pos", instruction=None)

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.n_action_steps = 2
        self.lock = threading.Lock()

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, obs: dict, task: str | list[str] | None = None) -> np.ndarray:
        image = np.asarray(obs["pixels"]["front"])
        state = np.asarray(obs["agent_pos"], dtype=np.float32)
        single = image.ndim == 3
        if single:
            image, state = image[None], state[None]
        batch = image.shape[0]
        tasks = [task] * batch if task is None or isinstance(task, str) else list(task)
        if len(tasks) != batch:
            raise ValueError(f"got {len(tasks)} tasks for {batch} observations")
        if "explode" in tasks:
            raise RuntimeError("the policy exploded")
        with self.lock:
            self.calls.append(batch)
        if self.delay_s:
            time.sleep(self.delay_s)
        task_code = np.array([zlib.crc32((t or "default").encode()) % 1000 for t in tasks], np.float32)
        base = image.reshape(batch, -1).mean(axis=1, dtype=np.float32) / 255.0  # (B,)
        steps = np.arange(CHUNK, dtype=np.float32)[None, :, None]  # (1, T, 1)
        dims = np.arange(ACTION_DIM, dtype=np.float32)[None, None, :]  # (1, 1, A)
        actions = (
            base[:, None, None]
            + state[:, :ACTION_DIM][:, None, :]
            + 0.001 * task_code[:, None, None]
            + 0.1 * steps * (dims + 1)
        ).astype(np.float32)  # (B, T, A)
        return actions[0] if single else actions

    def select_action(self, obs: dict, task: str | None = None) -> np.ndarray:
        return self.predict_action_chunk(obs, task)[..., 0, :]


def make_policy() -> ToyPolicy:
    """Factory for ``fastvla serve --policy serving_toy_policies:make_policy``."""
    return ToyPolicy()


def make_slow_policy() -> ToyPolicy:
    """Factory whose calls take ``$TOY_POLICY_DELAY_S`` seconds (a server to kill mid-request)."""
    import os

    return ToyPolicy(delay_s=float(os.environ.get("TOY_POLICY_DELAY_S", "0")))
