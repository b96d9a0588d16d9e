"""The auxiliary hindsight-goal head: off = today's model; on = action loss + w * L1, reaching the vision."""

from __future__ import annotations

import json

import pytest
import torch

from fastvla.model import FastVLAConfig, FastVLAModel, FastVLAProcessor

STATS = {
    "observation.state": {"mean": [0.5] * 8, "std": [2.0] * 8},
    "action": {"min": [-1.0] * 7, "max": [1.0] * 7},
}


def make_batch(b: int = 3, seed: int = 0, aux: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        f"observation.images.{c}": torch.randint(0, 256, (b, 3, 64, 64), generator=g).to(torch.uint8)
        for c in ("front", "wrist")
    }
    batch["observation.state"] = torch.randn(b, 8, generator=g)
    batch["task"] = ["pick up the red cube"] * b
    batch["action"] = torch.rand(b, 8, 7, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(b, 8, dtype=torch.bool)
    if aux:
        batch["aux_goal"] = torch.randn(b, 8, generator=g)
    return batch


def model(weight: float) -> FastVLAModel:
    torch.manual_seed(0)
    return FastVLAModel.from_preset("tiny", aux_goal_weight=weight).train()


def test_processor_divides_aux_goal_by_the_state_std() -> None:
    proc = FastVLAProcessor.from_preset("tiny", stats=STATS)
    batch = make_batch()
    inputs = proc(batch)
    torch.testing.assert_close(inputs["aux_goal"], batch["aux_goal"] / 2.0)  # no mean offset
    assert "aux_goal" not in proc(make_batch(aux=False))


def test_weight_zero_builds_no_head_and_keeps_the_loss() -> None:
    proc = FastVLAProcessor.from_preset("tiny", stats=STATS)
    torch.manual_seed(0)
    before = FastVLAModel.from_preset("tiny").train()  # a config without the field set
    off = model(0.0)
    assert off.aux_goal_head is None
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in before.named_parameters()]
    inputs = proc(make_batch(aux=False))
    torch.testing.assert_close(off(**inputs).loss, before(**inputs).loss, rtol=0, atol=0)
    assert off(**inputs).aux_loss is None
    with pytest.raises(ValueError, match="no aux_goal_head"):
        off(**proc(make_batch()))


def test_weight_adds_l1_of_the_goal_and_trains_the_vision_tower() -> None:
    proc = FastVLAProcessor.from_preset("tiny", stats=STATS)
    on = model(0.5)
    inputs = proc(make_batch())
    out = on(**inputs)
    action_only = on(**{k: v for k, v in inputs.items() if k != "aux_goal"})
    pred = on.aux_goal_head(out.hidden_states.mean(dim=1))  # (B, T, D) -> (B, D) -> (B, S)
    expected_aux = (pred - inputs["aux_goal"]).abs().mean()
    torch.testing.assert_close(out.aux_loss, expected_aux)
    torch.testing.assert_close(out.loss, action_only.loss + 0.5 * expected_aux)
    torch.testing.assert_close(out.actions, action_only.actions)  # the head does not touch the actions

    on.zero_grad()
    out.aux_loss.backward()  # the aux term alone reaches the images' path
    for prefix in ("aux_goal_head.", "vision.tower.", "projector.", "fusion."):
        grads = [p.grad for n, p in on.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), prefix


def test_aux_goal_weight_round_trips_through_save_and_load(tmp_path) -> None:
    on = model(0.5).eval()
    on.save_pretrained(tmp_path)
    assert FastVLAConfig.from_pretrained(tmp_path).aux_goal_weight == 0.5
    loaded = FastVLAModel.from_pretrained(tmp_path).eval()
    assert loaded.aux_goal_head is not None
    inputs = FastVLAProcessor.from_preset("tiny", stats=STATS)(make_batch())
    with torch.no_grad():
        a, b = on(**inputs), loaded(**inputs)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.aux_loss, b.aux_loss)


def test_old_checkpoint_loads_without_a_head_and_negative_weight_is_refused(tmp_path) -> None:
    model(0.0).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["aux_goal_weight"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert FastVLAModel.from_pretrained(tmp_path).aux_goal_head is None
    with pytest.raises(ValueError, match="aux_goal_weight must be >= 0"):
        FastVLAModel.from_preset("tiny", aux_goal_weight=-1.0)


def test_lora_trains_the_head_in_full() -> None:
    from fastvla.model.lora import add_lora

    peft = add_lora(model(0.5), r=4)
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert any("aux_goal_head" in n and "modules_to_save" in n for n in trainable)
    out = peft(**FastVLAProcessor.from_preset("tiny", stats=STATS)(make_batch()))
    assert out.aux_loss is not None and torch.isfinite(out.loss)


def test_4bit_load_keeps_the_head_unquantised(tmp_path) -> None:
    import bitsandbytes as bnb

    from fastvla.model import bnb_config

    torch.manual_seed(0)
    FastVLAModel.from_preset("tiny-vit", aux_goal_weight=0.5).save_pretrained(tmp_path)
    quant = FastVLAModel.from_pretrained(
        tmp_path, quantization_config=bnb_config(4, compute_dtype=torch.float32)
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quant.language_model.modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in quant.aux_goal_head.modules())
    assert all(p.dtype == torch.float32 for p in quant.aux_goal_head.parameters())
    proc = FastVLAProcessor.from_preset("tiny-vit", stats=STATS)
    out = quant.train()(**proc(make_batch()))
    assert torch.isfinite(out.loss) and out.aux_loss is not None
