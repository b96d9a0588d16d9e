"""4-/8-bit loading, LoRA switches, the bitsandbytes CPU repacking guard, and a QLoRA overfit run."""

from __future__ import annotations

import warnings

import bitsandbytes as bnb
import pytest
import torch

from fastvla.model import NON_QUANTIZED_MODULES, FastVLAModel, FastVLAProcessor, bnb_config
from fastvla.model.lora import LoraSettings, add_lora, lora_target_modules, merge_and_save

warnings.filterwarnings("ignore", message=".*inputs will be cast.*")


def tiny_inputs(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    proc = FastVLAProcessor.from_preset("tiny")
    return proc(
        {
            "observation.images.front": torch.randint(0, 256, (b, 3, 64, 64), generator=g).to(torch.uint8),
            "observation.images.wrist": torch.randint(0, 256, (b, 3, 64, 64), generator=g).to(torch.uint8),
            "observation.state": torch.randn(b, 8, generator=g),
            "task": ["pick up the red cube", "push the blue block"][:b],
            "action": torch.rand(b, 8, 7, generator=g) * 2 - 1,
        }
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny-vit checkpoint (both the tower and the decoder have Linear layers to quantise)."""
    path = tmp_path_factory.mktemp("tinyvit")
    torch.manual_seed(0)
    FastVLAModel.from_preset("tiny-vit").save_pretrained(path)
    return path


def quantized_names(model, cls) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, cls)}


def test_4bit_from_pretrained(saved) -> None:
    model = FastVLAModel.from_pretrained(
        saved, quantization_config=bnb_config(4, compute_dtype=torch.float32)
    )
    q = quantized_names(model, bnb.nn.Linear4bit)
    assert any(n.startswith("vision.tower.") for n in q) and any(n.startswith("language_model.") for n in q)
    assert not any(n.startswith(tuple(NON_QUANTIZED_MODULES)) for n in q)
    for prefix in ("fusion", "projector", "action_head", "state_proj"):
        params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        assert params and all(p.dtype == torch.float32 for p in params), prefix
    assert all(
        m.support_avx512bf16_for_cpu is False for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)
    )
    full = FastVLAModel.from_pretrained(saved).eval()
    assert model.get_memory_footprint() < 0.75 * full.get_memory_footprint()
    inputs = tiny_inputs()
    with torch.no_grad():
        a, b = model.eval()(**inputs).actions, full(**inputs).actions
    assert (a - b).abs().max() < 0.5 and not torch.equal(a, b)  # NF4 rounding, same function


def test_8bit_from_pretrained(saved) -> None:
    model = FastVLAModel.from_pretrained(saved, quantization_config=bnb_config(8))
    assert quantized_names(model, bnb.nn.Linear8bitLt)
    with torch.no_grad():
        out = model.eval()(**tiny_inputs())
    assert out.actions.shape == (2, 8, 7) and torch.isfinite(out.actions).all()


def test_4bit_lora_forward_backward(saved) -> None:
    model = FastVLAModel.from_pretrained(
        saved, quantization_config=bnb_config(4, compute_dtype=torch.float32)
    )
    peft_model = add_lora(model, r=8)
    out = peft_model(**tiny_inputs())
    out.loss.backward()
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or ("modules_to_save" in n) for n in trainable)
    assert all(
        p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad and "lora_A" in n
    )
    assert any("action_head" in n for n in trainable) and any("fusion" in n for n in trainable)


def test_lora_trainable_counts_per_switch() -> None:
    model = FastVLAModel.from_preset("tiny-vit")
    r = 8
    # independent count for the decoder: per layer q,k,v,o (128->128), gate/up (128->256), down (256->128)
    per_layer_attn, per_layer_mlp = 4 * r * (128 + 128), 2 * r * (128 + 256) + r * (256 + 128)
    # ViT 2x64: query/key/value/output (64->64) and intermediate (64->128), output (128->64)
    vit_attn, vit_mlp = 4 * r * (64 + 64), r * (64 + 128) + r * (128 + 64)
    cases = {
        "all": ({}, 2 * (per_layer_attn + per_layer_mlp + vit_attn + vit_mlp)),
        "language only": ({"target_vision": False}, 2 * (per_layer_attn + per_layer_mlp)),
        "vision only": ({"target_language": False}, 2 * (vit_attn + vit_mlp)),
        "attention only": ({"mlp": False}, 2 * (per_layer_attn + vit_attn)),
        "mlp only": ({"attention": False}, 2 * (per_layer_mlp + vit_mlp)),
    }
    full_modules = sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(tuple(NON_QUANTIZED_MODULES))
    )
    for name, (switches, expected) in cases.items():
        fresh = FastVLAModel.from_preset("tiny-vit")
        peft_model = add_lora(fresh, r=r, **switches)
        lora = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n)
        rest = sum(
            p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n
        )
        assert lora == expected, name
        assert rest == full_modules, name  # FastVLA modules always train in full
    with pytest.raises(ValueError, match="select no layers"):
        add_lora(FastVLAModel.from_preset("tiny-vit"), target_vision=False, target_language=False)
    names = lora_target_modules(model, LoraSettings(mlp=False))
    assert names and all(("attention" in n) or ("self_attn" in n) for n in names)


def _lora_grads(peft_model, inputs) -> dict[str, torch.Tensor]:
    peft_model.train()
    peft_model.zero_grad()
    peft_model(**inputs).loss.backward()
    return {
        n: p.grad.clone() for n, p in peft_model.named_parameters() if "lora_" in n and p.grad is not None
    }


def _eval_pass_grad_error(saved, guard: bool) -> float:
    torch.manual_seed(0)
    model = FastVLAModel.from_pretrained(
        saved, quantization_config=bnb_config(4, compute_dtype=torch.float32)
    )
    peft_model = add_lora(model, r=8, dropout=0.0)
    if not guard:  # undo the guard to show what it prevents
        for m in peft_model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)  # non-zero B so lora_A gets gradients
    inputs = tiny_inputs()
    before = _lora_grads(peft_model, inputs)
    peft_model.eval()
    with torch.no_grad():  # a validation pass inside training
        peft_model(**inputs)
    after = _lora_grads(peft_model, inputs)
    return max(((before[k] - after[k]).norm() / before[k].norm().clamp(min=1e-12)).item() for k in before)


def test_gradients_after_eval_pass_still_match(saved) -> None:
    assert _eval_pass_grad_error(saved, guard=True) < 1e-5


def test_eval_pass_corrupts_gradients_without_guard(saved) -> None:
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks, nothing to guard")
    # the pitfall the guard exists for: wrong LoRA gradients, or (depending on layout) a crash
    try:
        assert _eval_pass_grad_error(saved, guard=False) > 0.1
    except RuntimeError as err:
        assert "in-place" in str(err)


def synthetic_episode(length: int = 16) -> dict:
    """One short episode: a bright block slides across both cameras; 7-D actions vary smoothly with time."""
    t = torch.linspace(0, 1, length)
    images = torch.full((length, 3, 64, 64), 60, dtype=torch.uint8)
    for i in range(length):
        x = int(8 + 40 * t[i])
        images[i, :, 20:28, x : x + 8] = 230
    acts = torch.stack(
        [
            torch.sin(3 * t),
            torch.cos(2 * t),
            2 * t - 1,
            0.5 * torch.sin(5 * t),
            t,
            -t,
            torch.full_like(t, 0.3),
        ],
        1,
    )  # (length, 7)
    steps = torch.arange(length)[:, None] + torch.arange(8)[None]  # (length, chunk)
    return {
        "observation.images.front": images,
        "observation.images.wrist": images.flip(-1),
        "observation.state": torch.cat([acts, t[:, None]], 1),
        "task": ["pick up the red cube"] * length,
        "action": acts[steps.clamp(max=length - 1)],  # (length, chunk, 7)
        "action_is_pad": steps >= length,
    }


def masked_l1(pred: torch.Tensor, inputs: dict) -> float:
    valid = (~inputs["action_is_pad"]).float()[..., None]
    return ((pred - inputs["actions"]).abs() * valid).sum().item() / (valid.sum().item() * pred.shape[-1])


@pytest.mark.slow
def test_qlora_overfits_one_episode_and_survives_merge(tmp_path) -> None:
    torch.manual_seed(0)
    FastVLAModel.from_preset("tiny").save_pretrained(tmp_path / "base")
    model = FastVLAModel.from_pretrained(
        tmp_path / "base", quantization_config=bnb_config(4, compute_dtype=torch.float32)
    )
    peft_model = add_lora(model, r=16, alpha=32, dropout=0.0)
    processor = FastVLAProcessor.from_preset("tiny")
    inputs = processor(synthetic_episode())

    def evaluate(m) -> tuple[float, torch.Tensor]:
        m.eval()
        with torch.no_grad():  # an eval pass inside training: the 4-bit CPU guard keeps gradients right
            pred = m(**inputs).actions
        m.train()
        return masked_l1(pred, inputs), pred

    initial, _ = evaluate(peft_model)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(300):
        loss = peft_model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and evaluate(peft_model)[0] < initial / 12:
            break
    final, before_merge = evaluate(peft_model)
    assert final < initial / 10, (initial, final, step)

    merged = merge_and_save(peft_model, tmp_path / "merged", processor)
    merged_l1, after_merge = evaluate(merged)
    assert merged_l1 < initial / 8  # re-quantising the merged weights moves predictions only a little
    assert (after_merge - before_merge).abs().max() < 0.1
    reloaded = FastVLAModel.from_pretrained(tmp_path / "merged").eval()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in reloaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).actions, after_merge, rtol=0, atol=1e-5)


def test_unsloth_shaped_api_adapts_like_add_lora_and_switches_keep_gradients(saved) -> None:
    """get_peft_model = add_lora under Unsloth's names; for_inference/for_training toggle modes safely."""
    quant = bnb_config(4, compute_dtype=torch.float32)
    ours = FastVLAModel.get_peft_model(FastVLAModel.from_pretrained(saved, quantization_config=quant), r=8)
    ref = add_lora(FastVLAModel.from_pretrained(saved, quantization_config=quant), r=8)

    def trainable(m) -> set[str]:
        return {n for n, p in m.named_parameters() if p.requires_grad}

    assert trainable(ours) == trainable(ref) and any("lora_A" in n for n in trainable(ours))
    for n, p in ours.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)  # non-zero B so lora_A gets gradients
    inputs = tiny_inputs()
    before = _lora_grads(FastVLAModel.for_training(ours), inputs)
    assert FastVLAModel.for_inference(ours) is ours and not ours.training
    with torch.no_grad():
        ours(**inputs)
    assert FastVLAModel.for_training(ours).training
    after = _lora_grads(ours, inputs)
    assert max(((before[k] - after[k]).norm() / before[k].norm()).item() for k in before) < 1e-5


def test_cpu_4bit_setup_keeps_the_kernels_community_warning_out_of_user_output(tmp_path) -> None:
    """bitsandbytes warns on import when its optional hub kernel can't load; FastVLA's 4-bit path hides it."""
    import subprocess
    import sys

    code = "from fastvla.model import bnb_config; bnb_config(4); import bitsandbytes"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gemm_4bit_forward" not in proc.stderr + proc.stdout
