"""The shipped ``sim-base`` checkpoint: it loads (fp32, 4-bit), QLoRA on it learns, it acts in closed loop."""

from __future__ import annotations

import json

import numpy as np
import torch

from fastvla.checkpoints import available, path
from fastvla.envs.colors import HELD_OUT_COLOR, TRAIN_COLORS
from fastvla.model import FastVLAModel, FastVLAProcessor, bnb_config
from fastvla.model.quantization import is_quantized


def test_shipped_base_is_complete_small_and_documented() -> None:
    folder = path("sim-base")
    assert "sim-base" in available()
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 25 * 10**6, "the shipped base must stay <= 25 MB"
    for name in ("config.json", "processor_config.json", "tokenizer.json", "dataset_stats.json", "README.md"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "fastvla train" in card and "fastvla record" in card and "| task |" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["cameras"] == ["front", "wrist"] and config["image_size"] == [64, 64]
    assert HELD_OUT_COLOR not in TRAIN_COLORS


def test_shipped_base_loads_in_4bit_and_matches_fp32() -> None:
    folder = path("sim-base")
    fp32 = FastVLAModel.from_pretrained(folder).eval()
    nf4 = FastVLAModel.from_pretrained(folder, quantization_config=bnb_config(4, compute_dtype=torch.float32))
    assert not is_quantized(fp32) and is_quantized(nf4)
    nf4.eval()
    proc = FastVLAProcessor.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    batch = {
        "observation.images.front": torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8),
        "observation.images.wrist": torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8),
        "observation.state": torch.randn(2, 8, generator=g),
        "task": ["pick up the red cube", "push the green cube to the target"],
    }
    with torch.no_grad():
        a = fp32(**proc(batch)).actions
        b = nf4(**proc(batch)).actions
    assert torch.isfinite(a).all() and a.shape == (2, 8, 7)
    # NF4 perturbs the decoder's weights, not the prediction's scale.
    assert (a - b).abs().mean() < 0.5 * a.abs().mean() + 0.05


def test_qlora_on_shipped_base_fits_new_demonstrations(tmp_path) -> None:
    """Record purple-instruction demos, QLoRA-fine-tune the 4-bit base through ``train``: the loss falls."""
    from fastvla.datasets.recorder import record
    from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig, train

    data = tmp_path / "data"
    record(
        "fastvla/ReachCube-v0",
        data,
        episodes=3,
        image_size=64,
        num_envs=1,
        env_kwargs={"instruction_colors": [HELD_OUT_COLOR]},
        progress=False,
    )
    cfg = TrainConfig(
        output_dir=str(tmp_path / "run"),
        steps=40,
        batch_size=8,
        log_every=10,
        val_every=0,
        progress=False,
        tensorboard=False,
        data=DataConfig(root=str(data), image_size=64, val_fraction=0.0),
        model=ModelConfig(checkpoint=str(path("sim-base")), quantization="4bit", lora_r=8),
        optim=OptimConfig(lr=3e-3, head_lr=3e-3, warmup_steps=0),
    )
    policy_dir = train(cfg)
    losses = [
        json.loads(line)["train/loss"]
        for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
    exported = json.loads((policy_dir / "policy_config.json").read_text())
    assert exported["trained_with_quantization"] == "4bit"
    assert exported["merged_into"] == "full-precision checkpoint"
    assert not is_quantized(FastVLAModel.from_pretrained(policy_dir))


def test_closed_loop_episode_from_shipped_checkpoint(tmp_path) -> None:
    from fastvla.eval import evaluate
    from fastvla.policies import FastVLAPolicy

    policy = FastVLAPolicy.from_pretrained(
        path("sim-base"), device="cpu", load_in_4bit=True, n_action_steps=4
    )
    result = evaluate(
        policy,
        "fastvla/ReachCube-v0",
        n_episodes=1,
        seed=123_456,
        env_kwargs={"cameras": ("front", "wrist"), "image_size": 64},
        out_dir=tmp_path,
        max_videos=1,
        progress=False,
    )
    assert result.n_episodes == 1 and result.episodes[0].length >= 1
    assert np.isfinite(result.mean_return)
    assert (tmp_path / "eval_info.json").is_file()
