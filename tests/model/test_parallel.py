"""Tensor parallelism of the vision tower: 2 CPU processes (gloo) give what one process gives.

The worker (``_tp_worker.py``, under torchrun) shards the tiny ViT tower over both processes; here one
process computes the same things with the whole tower.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastvla.model.parallel import vision_tp_plan

from . import _tp_worker as worker

ROOT = Path(__file__).resolve().parents[2]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _run_ranks(out: Path, device: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, worker.__file__, str(out), device], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _run_ranks(tmp_path_factory.mktemp("tp"), "cpu")


def test_sharded_tower_forward_and_gradients_match_one_process(ranks: list[dict]) -> None:
    _check_tower(ranks)


def _check_tower(ranks: list[dict], tol: dict = TOL) -> None:
    tower = worker.build().vision.tower
    hidden = tower(pixel_values=worker.pixels(1, 3)).last_hidden_state
    (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
    for r in ranks:
        torch.testing.assert_close(r["tower_out"], hidden.detach(), **tol)
        grads = {n: p.grad for n, p in tower.named_parameters() if p.grad is not None}
        assert r["tower_grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(r["tower_grads"][name], grad, **tol, msg=name)


def test_group_batch_model_matches_one_process_per_rank(ranks: list[dict]) -> None:
    """Each rank's loss is one process's on its batch; the shared tower's gradient is that of the sum of
    both ranks' losses, every other gradient that of the rank's own loss."""
    _check_model(ranks)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_nccl_match_one_cpu_process(tmp_path: Path) -> None:
    """The same two checks with the ranks on two GPUs (NCCL, TF32 off), against one CPU process."""
    ranks = _run_ranks(tmp_path, "cuda")
    tol = {"rtol": 1e-3, "atol": 1e-4}  # GPU kernels sum in other orders than the CPU ones
    _check_tower(ranks, tol)
    _check_model(ranks, tol)


def _check_model(ranks: list[dict], tol: dict = TOL) -> None:
    models = [worker.build() for _ in range(2)]
    losses = [m(**worker.model_batch(10 + r, 3 - r)).loss for r, m in enumerate(models)]
    for loss in losses:
        loss.backward()
    for r, (result, model, loss) in enumerate(zip(ranks, models, losses, strict=True)):
        torch.testing.assert_close(result["loss"], loss.detach(), **tol)
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            if name.startswith("vision.tower."):
                other = dict(models[1 - r].named_parameters())[name].grad
                want, key = p.grad + other, name.replace("vision.tower.", "vision.tower.tower.", 1)
            else:
                want, key = p.grad, name
            torch.testing.assert_close(result["grads"][key], want, **tol, msg=name)
        with torch.no_grad():  # unsharded again: a plain model (what export saves)
            want = model(**worker.model_batch(10 + r, 3 - r)).actions
        torch.testing.assert_close(result["unsharded_actions"], want, **tol)


def test_conv_and_quantised_towers_are_refused_with_the_fix() -> None:
    from fastvla.model import FastVLAModel

    with pytest.raises(ValueError, match="ViT-family tower"):
        vision_tp_plan(FastVLAModel.from_preset("tiny").vision.tower)
    tower = worker.build().vision.tower
    first = tower.get_submodule(next(n for n, _ in tower.named_modules() if n.endswith("q_proj")))
    first.__class__ = type("Linear4bit", (torch.nn.Linear,), {})
    with pytest.raises(ValueError, match=r"--model\.quantization none"):
        vision_tp_plan(tower)
