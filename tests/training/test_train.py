"""End-to-end training on the recorded LeRobot fixture with the tiny preset (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastvla.constants import DATASET_STATS_FILE, POLICY_CONFIG_FILE
from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig, factory
from fastvla.training import checkpoint as ckpt
from fastvla.training.loop import Trainer


def _config(dataset_root: Path, frame_cache: Path, out: Path, **kwargs) -> TrainConfig:
    data = {"root": str(dataset_root), "val_episodes": (2,), "cache_dir": str(frame_cache), "num_workers": 0}
    data.update(kwargs.pop("data", {}))
    base = {
        "data": DataConfig(**data),
        "output_dir": str(out),
        "steps": 30,
        "batch_size": 8,
        "log_every": 10,
        "save_every": 0,
        "val_every": 0,
        "progress": False,
        "optim": OptimConfig(lr=1e-3, head_lr=1e-3, warmup_steps=3),
    }
    base.update(kwargs)
    return TrainConfig(**base)


def _mean_loss(trainer: Trainer, n: int = 32) -> float:
    """Loss of the current model over the first ``n`` training samples (fixed, in eval mode)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    with torch.no_grad():
        batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(n)])
        loss = model(**factory.model_inputs(trainer.processor, batch, torch.device("cpu"))).loss.item()
    model.train()
    return loss


@pytest.fixture(scope="module")
def trained(dataset_root: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    cfg = _config(dataset_root, frame_cache, out, val_every=30, eval_every=15, data={"num_workers": 1})
    calls: list[tuple[int, bool]] = []

    def eval_hook(*, step: int, model, processor, output_dir: Path) -> dict[str, float]:
        calls.append((step, model.training))
        assert output_dir == out and processor is trainer.processor
        return {"success_rate": step / 100}

    trainer = Trainer(cfg, eval_hook=eval_hook)
    trainer.hook_calls = calls
    before = _mean_loss(trainer)
    policy_dir = trainer.fit()
    return trainer, before, _mean_loss(trainer), policy_dir


def test_tiny_training_lowers_the_loss(trained) -> None:
    _, before, after, _ = trained
    assert after < 0.5 * before, (before, after)


def test_eval_hook_runs_on_schedule_in_eval_mode(trained) -> None:
    trainer = trained[0]
    assert trainer.hook_calls == [(15, False), (30, False)]  # the model is in eval mode inside the hook
    logged = [(h["step"], h["eval/success_rate"]) for h in trainer.history if "eval/success_rate" in h]
    assert logged == [(15, 0.15), (30, 0.3)]
    assert trainer.model.training  # and back in training mode after it


def test_run_folder_has_checkpoint_logs_and_policy(trained) -> None:
    trainer, _, _, policy_dir = trained
    out = trainer.out
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [30]  # the final update is always saved
    state = json.loads((ckpt.checkpoint_path(out, 30) / ckpt.STATE_FILE).read_text())
    assert state["step"] == 30 and state["samples_seen"] == 240 and state["val_episodes"] == [2]
    assert list((out / "logs").glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert TrainConfig.load(out / ckpt.CONFIG_FILE) == trainer.cfg
    for name in (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        DATASET_STATS_FILE,
        POLICY_CONFIG_FILE,
    ):
        assert (policy_dir / name).is_file(), name
    assert json.loads((policy_dir / POLICY_CONFIG_FILE).read_text())["cameras"] == ["front", "wrist"]


def test_exported_policy_reloads_with_the_trained_weights(trained) -> None:
    from fastvla.policies import FastVLAPolicy

    trainer, _, after, policy_dir = trained
    policy = FastVLAPolicy.from_pretrained(policy_dir, device="cpu")
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(32)])
    with torch.no_grad():
        loss = policy.model(**policy.processor(batch)).loss.item()
    assert loss == pytest.approx(after, rel=1e-4)
    sample = trainer.train_set[0]
    obs = {
        "pixels": {c: sample[f"observation.images.{c}"].permute(1, 2, 0).numpy() for c in ("front", "wrist")},
        "agent_pos": sample["observation.state"].numpy(),
    }
    chunk = policy.predict_action_chunk(obs, task=sample["task"])  # env units
    assert chunk.shape == (8, 7) and np.isfinite(chunk).all()


def test_validation_under_cpu_4bit_leaves_lora_gradients_intact(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    import bitsandbytes as bnb

    model_cfg = ModelConfig(quantization="4bit", lora_dropout=0.0)  # no dropout: gradients are reproducible
    cfg = _config(dataset_root, frame_cache, tmp_path, steps=2, val_every=1, model=model_cfg)
    trainer = Trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and any("lora_A" in n for n, p in model.named_parameters() if p.requires_grad)
    for layer in layers:  # as a loader without the model's own guard would leave them
        layer.support_avx512bf16_for_cpu = True
    batch = factory.model_inputs(
        trainer.processor, torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)]), "cpu"
    )

    def lora_grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        trainer.model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}

    trainer.model.train()  # from_pretrained (the 4-bit load) leaves the model in eval mode; fit() switches
    before = lora_grads()
    assert trainer.validate() > 0
    after = lora_grads()
    assert before.keys() == after.keys() and before
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-4, atol=1e-6, msg=name)

    if "avx512_bf16" in Path("/proc/cpuinfo").read_text():
        # Control: the same eval forward without the guard does corrupt the gradients on this CPU,
        # so the assertion above would catch a validation loop that forgot the guard.
        for layer in layers:
            layer.support_avx512bf16_for_cpu = True
        model.eval()
        with torch.no_grad():
            model(**batch)
        model.train()
        broken = lora_grads()
        assert any(not torch.allclose(broken[n], before[n], rtol=1e-2, atol=1e-5) for n in before)

    # The QLoRA run exports a folder the policy loads directly (adapters merged into the 4-bit base).
    from fastvla.policies import FastVLAPolicy

    policy = FastVLAPolicy.from_pretrained(trainer.fit(), device="cpu")
    pixels = {c: np.zeros((64, 64, 3), np.uint8) for c in ("front", "wrist")}
    obs = {"pixels": pixels, "agent_pos": np.zeros(7)}
    assert policy.predict_action_chunk(obs, task="pick the cube").shape == (8, 7)


def test_missing_camera_is_a_clear_error(dataset_root: Path, frame_cache: Path, tmp_path: Path) -> None:
    cfg = _config(dataset_root, frame_cache, tmp_path, data={"cameras": ("front", "top")})
    with pytest.raises(
        ValueError, match=r"camera\(s\) \['top'\] not in dataset .*available: \['front', 'wrist'\]"
    ):
        Trainer(cfg)


def test_checkpoint_with_other_action_dim_is_a_clear_error(
    dataset_root: Path, frame_cache: Path, tmp_path: Path
) -> None:
    from fastvla.model import FastVLAModel, FastVLAProcessor

    model_dir = tmp_path / "other"
    FastVLAModel.from_preset("tiny", action_dim=5, state_dim=7).save_pretrained(model_dir)
    FastVLAProcessor.from_preset("tiny").save_pretrained(model_dir)
    cfg = _config(dataset_root, frame_cache, tmp_path / "run", model=ModelConfig(checkpoint=str(model_dir)))
    with pytest.raises(ValueError, match=r"action_dim 5 \(dataset: 7\)"):
        Trainer(cfg)


def test_unusable_bitsandbytes_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes as bnb

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bnb.nn, "Linear4bit", broken)
    with pytest.raises(
        RuntimeError, match=r"4bit needs bitsandbytes kernels for cpu.*--model.quantization none"
    ):
        factory.check_bitsandbytes(4, torch.device("cpu"))


def test_existing_run_needs_resume_or_overwrite(trained, dataset_root: Path, frame_cache: Path) -> None:
    trainer = trained[0]
    with pytest.raises(FileExistsError, match="pass --resume to continue"):
        Trainer(_config(dataset_root, frame_cache, trainer.out))


def test_oom_message_names_the_knobs() -> None:
    cfg = TrainConfig(batch_size=16)
    with (
        pytest.raises(RuntimeError, match="--batch-size 8 with --grad-accum-steps 2") as info,
        factory.oom_advice(cfg),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    for knob in (
        "--model.gradient-checkpointing",
        "--model.quantization 4bit",
        "paged_adamw8bit",
        "image-size",
    ):
        assert knob in str(info.value)
