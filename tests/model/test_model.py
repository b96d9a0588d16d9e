"""FastVLAModel / FastVLAConfig / presets: forward, loss, save/load, fusion, heads, depth, registration."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from fastvla.model import PRESETS, FastVLAConfig, FastVLAModel, FastVLAProcessor, preset_config

STATS = {
    "observation.state": {"mean": [0.0] * 8, "std": [1.0] * 8},
    "action": {"min": [-1.0] * 7, "max": [1.0] * 7},
}


def make_batch(b: int = 3, cams: tuple[str, ...] = ("front", "wrist"), size: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        f"observation.images.{c}": torch.randint(0, 256, (b, 3, size, size), generator=g).to(torch.uint8)
        for c in cams
    }
    batch["observation.state"] = torch.randn(b, 8, generator=g)
    batch["task"] = ["pick up the red cube", "push the blue block to the left", "stack"][:b] + ["x"] * (b - 3)
    batch["action"] = torch.rand(b, 8, 7, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(b, 8, dtype=torch.bool)
    return batch


@pytest.fixture(scope="module")
def tiny() -> FastVLAModel:
    torch.manual_seed(0)
    return FastVLAModel.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def proc() -> FastVLAProcessor:
    return FastVLAProcessor.from_preset("tiny", stats=STATS)


@pytest.mark.parametrize("preset", ["tiny", "tiny-vit"])
def test_forward_backward_fp32(preset: str) -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset(preset).train()
    proc = FastVLAProcessor.from_preset(preset, stats=STATS)
    out = model(**proc(make_batch()))
    assert out.actions.shape == (3, 8, 7)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # every component receives gradient signal (FiLM is zero-initialised but its gradient is not zero)
    for prefix in ("vision.tower", "projector", "fusion", "language_model", "state_proj", "action_head"):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(prefix)), (
            prefix
        )


def test_loss_masks_padded_steps(tiny: FastVLAModel, proc: FastVLAProcessor) -> None:
    batch = make_batch()
    inputs = proc(batch)
    with torch.no_grad():
        pred = tiny(**inputs).actions
        inputs["action_is_pad"][:, 4:] = True
        target = inputs["actions"].clone()
        target[:, 4:] += 100.0  # garbage in padded steps must not change the loss
        loss_a = tiny(**{**inputs, "actions": inputs["actions"]}).loss
        loss_b = tiny(**{**inputs, "actions": target}).loss
    expected = (pred[:, :4] - inputs["actions"][:, :4]).abs().mean()
    torch.testing.assert_close(loss_a, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_a, loss_b)


def test_save_load_identical_outputs(tmp_path, tiny: FastVLAModel, proc: FastVLAProcessor) -> None:
    tiny.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "dataset_stats.json").is_file()
    loaded = FastVLAModel.from_pretrained(tmp_path).eval()
    proc2 = FastVLAProcessor.from_pretrained(tmp_path)
    batch = make_batch()
    with torch.no_grad():
        a = tiny(**proc(batch)).actions
        b = loaded(**proc2(batch)).actions
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the Auto classes know the model type
    assert isinstance(AutoModel.from_pretrained(tmp_path), FastVLAModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), FastVLAConfig)


def test_fusion_output_independent_of_camera_count() -> None:
    lengths = {}
    for cams in (["front"], ["front", "wrist"], ["front", "wrist", "side"]):
        model = FastVLAModel.from_preset("tiny", cameras=cams).eval()
        pixels = torch.rand(2, len(cams), 3, 64, 64)
        with torch.no_grad():
            fused = model.encode_images(pixels, torch.zeros(2, 128))
        lengths[len(cams)] = fused.shape
    assert set(lengths.values()) == {torch.Size([2, 16, 128])}
    # prefix mode grows with the camera count (8x8 tokens per camera for the tiny ResNet)
    model = FastVLAModel.from_preset("tiny", cameras=["a", "b", "c"], fusion={"mode": "prefix"}).eval()
    with torch.no_grad():
        fused = model.encode_images(torch.rand(2, 3, 3, 64, 64))
        out = model(pixel_values=torch.rand(2, 3, 3, 64, 64), input_ids=torch.ones(2, 4, dtype=torch.long))
    assert fused.shape == (2, 3 * 64, 128) and out.actions.shape == (2, 8, 7)


def test_instruction_changes_prediction(tiny: FastVLAModel, proc: FastVLAProcessor) -> None:
    batch = make_batch(2)
    batch["task"] = ["pick up the red cube", "pick up the red cube"]
    same = proc(batch)
    batch["task"] = ["pick up the red cube", "push the green block far away"]
    diff = proc(batch)
    with torch.no_grad():
        a, b = tiny(**same).actions, tiny(**diff).actions
    torch.testing.assert_close(a[0], b[0])  # padding of the other sample does not leak
    assert not torch.allclose(a[1], b[1])


def test_discrete_head() -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", action_head={"head_type": "discrete", "num_bins": 256})
    proc = FastVLAProcessor.from_preset("tiny", stats=STATS)
    out = model(**proc(make_batch()))
    assert out.logits.shape == (3, 8, 7, 256)
    assert out.actions.abs().max() <= 1.0
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss > 4.0  # ~ln(256) at init


def test_depth_embedding_starts_as_noop() -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny", use_depth=True).eval()
    pixels = torch.rand(2, 2, 3, 64, 64)
    ids = torch.ones(2, 4, dtype=torch.long)
    with torch.no_grad():
        a = model(pixel_values=pixels, input_ids=ids).actions
        b = model(pixel_values=pixels, input_ids=ids, depth=torch.rand(2, 2, 1, 64, 64)).actions
        torch.testing.assert_close(a, b)
        model.vision.depth_embed.weight.fill_(0.1)  # once trained, depth matters
        c = model(pixel_values=pixels, input_ids=ids, depth=torch.rand(2, 2, 1, 64, 64)).actions
    assert not torch.allclose(a, c)


def test_presets_registry_and_errors() -> None:
    assert {"tiny", "tiny-vit", "openvla-7b-shape"} <= set(PRESETS)
    with pytest.raises(KeyError, match="available"):
        preset_config("nope")
    with pytest.raises(ValueError, match="num_heads"):
        preset_config("tiny", fusion={"num_heads": 3})
    with pytest.raises(ValueError, match="cameras"):
        preset_config("tiny", cameras=["a", "a"])
    # widths stay multiples of 64 in the tiny presets (bitsandbytes CPU kernels need it)
    model = FastVLAModel.from_preset("tiny-vit")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith(("vision.tower", "language_model")):
            assert module.in_features % 64 == 0 and module.out_features % 64 == 0, name


def test_openvla_7b_shape_builds_on_meta() -> None:
    model = FastVLAModel.from_preset("openvla-7b-shape", device="meta", dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < n < 7.8e9
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())


def test_gradient_checkpointing_and_autocast() -> None:
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny-vit").train()
    inputs = FastVLAProcessor.from_preset("tiny-vit", stats=STATS)(make_batch(2))
    model(**inputs).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(**inputs).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)
    # the reduced-precision autocast path (fp16 on CUDA GPUs without bf16; bf16 on CPU here)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs)
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32


@pytest.mark.parametrize("readout", ["queries", "token"])
def test_keypoint_readout_carries_the_scene(readout: str) -> None:
    """Both readouts pass the keypoints to the actions; ``token`` adds exactly one decoder token and keeps
    the action queries free of them (shifting the keypoint summary then moves only the token)."""
    torch.manual_seed(0)
    model = FastVLAModel.from_preset("sim-base", fusion={"keypoint_readout": readout}).eval()
    assert model.keypoint_proj is not None and model.config.fusion.keypoint_readout == readout
    seen: list[int] = []
    hook = model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["inputs_embeds"].shape[1]), with_kwargs=True
    )
    ids = torch.randint(0, 100, (1, 6))
    state = torch.zeros(1, model.config.state_dim)
    with torch.no_grad():
        base = model(pixel_values=torch.zeros(1, 2, 3, 64, 64), input_ids=ids, state=state).actions
        torch.nn.init.normal_(model.keypoint_proj.bias, std=1.0)  # a different keypoint summary
        moved = model(pixel_values=torch.zeros(1, 2, 3, 64, 64), input_ids=ids, state=state).actions
    hook.remove()
    queries = model.config.fusion.num_queries
    assert seen[0] == queries + 6 + 1 + (readout == "token") + model.config.chunk_size
    assert (base - moved).abs().max() > 1e-4


def test_keypoint_readout_is_validated() -> None:
    with pytest.raises(ValueError, match="keypoint_readout"):
        preset_config("sim-base", fusion={"keypoint_readout": "prefix"})
