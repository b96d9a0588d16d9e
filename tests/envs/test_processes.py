"""Process-level behaviour: async vector envs in worker processes, and rendering next to training."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from fastvla.envs import make_vec_env


def test_async_vector_env_two_workers_steps_renders_and_calls_expert():
    env = make_vec_env("fastvla/ReachCube-v0", 2, asynchronous=True, context="forkserver", image_size=24)
    try:
        obs, info = env.reset(seed=[5, 6])
        assert obs["pixels"]["front"].shape == (2, 24, 24, 3)
        assert obs["pixels"]["wrist"].dtype == np.uint8
        assert obs["agent_pos"].shape == (2, 8)
        assert not np.array_equal(obs["pixels"]["front"][0], obs["pixels"]["front"][1])
        tasks = env.call("task_description")
        assert list(info["task"]) == list(tasks) and all("cube" in t or "block" in t for t in tasks)
        done = np.zeros(2, dtype=bool)
        for _ in range(15):
            actions = np.stack(env.call("expert_action"))
            assert actions.shape == (2, 7)
            obs, _, _, _, info = env.step(actions)
            done |= info["is_success"]
            if done.all():
                break
        assert done.all()
        assert obs["pixels"]["wrist"].std() > 5
    finally:
        env.close()


def test_render_then_optimizer_step_does_not_crash():
    """Mesa's LLVM and Triton's clash if Triton loads after a GL context; the env preloads Triton."""
    script = textwrap.dedent(
        """
        import importlib.util
        import sys

        import gymnasium as gym
        import torch
        import fastvla.envs

        env = gym.make("fastvla/PickCube-v0", image_size=32)
        env.reset(seed=0)
        for _ in range(20):
            env.step(env.unwrapped.expert_action())
        env.close()
        if importlib.util.find_spec("triton") is not None:
            assert "triton" in sys.modules, "renderer did not preload triton"
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 7))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        print("OK", float(loss))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "OK" in proc.stdout
