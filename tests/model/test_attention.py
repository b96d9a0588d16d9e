"""``attn_implementation="sdpa_flash"``: PyTorch's FlashAttention-2 kernel, selected and checked.

CPU: the option refuses CPU models with a clear error, and the attention function it registers computes
the same attention as ``sdpa`` (with and without padding). GPU (``-m gpu``): on CUDA in bf16 the flash
kernel is the one that runs, in the tower, the fusion and the decoder.
"""

from __future__ import annotations

import pytest
import torch

from fastvla.model import FastVLAModel
from fastvla.model.attention import HF_KEY, register_sdpa_flash
from fastvla.model.presets import preset_config, random_batch
from fastvla.training import ModelConfig


def _batch(device: str = "cpu", padded: bool = False) -> dict[str, torch.Tensor]:
    batch = random_batch(2)
    if padded:
        batch["attention_mask"][0, 3:] = 0
    return {k: v.to(device) for k, v in batch.items()}


def test_sdpa_flash_refuses_cpu_models_with_the_fix_named(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"need a CUDA GPU.*attn_implementation='sdpa'"):
        FastVLAModel.from_preset("tiny", attn_implementation="sdpa_flash")
    FastVLAModel.from_preset("tiny", attn_implementation="sdpa").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="need a CUDA GPU"):
        FastVLAModel.from_pretrained(tmp_path, attn_implementation="sdpa_flash", device_map={"": "cpu"})
    assert ModelConfig(attn_implementation="sdpa_flash").attn_implementation == "sdpa_flash"
    with pytest.raises(ValueError, match="attn_implementation 'flash' unknown"):
        ModelConfig(attn_implementation="flash")


@pytest.mark.parametrize("padded", [False, True])
def test_registered_attention_computes_what_sdpa_computes(padded: bool) -> None:
    """The decoder through the registered function (and the tower and fusion under flash_only) on CPU."""
    register_sdpa_flash()
    torch.manual_seed(0)
    models = []
    for attn in (HF_KEY, "sdpa"):
        config = preset_config("tiny-vit")
        config._attn_implementation = {"": attn, "text": attn}  # bypasses the CUDA check, for CPU
        models.append(FastVLAModel(config).eval())
    models[1].load_state_dict(models[0].state_dict())
    assert models[0].language_model.config._attn_implementation == HF_KEY
    with torch.no_grad():
        flash, sdpa = (m(**_batch(padded=padded)) for m in models)
    torch.testing.assert_close(flash.actions, sdpa.actions, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flash_kernel_runs_on_cuda_bf16() -> None:
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = FastVLAModel.from_preset("tiny-vit", device="cuda", attn_implementation="sdpa_flash")
    reference = FastVLAModel.from_preset("tiny-vit", device="cuda", attn_implementation="sdpa")
    reference.load_state_dict(model.state_dict())
    batch = _batch("cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch)
        out.loss.backward()
        torch.cuda.synchronize()
    ops = [e.key for e in prof.key_averages()]
    flash = [k for k in ops if k.startswith("aten::_scaled_dot_product_flash_attention")]
    others = [k for k in ops if "efficient_attention" in k or "cudnn_attention" in k or "_math" in k]
    assert flash and not others, (flash, others)
    assert any("flash" in k.lower() and "backward" in k.lower() for k in ops)  # the backward too
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(model(**batch).actions, reference(**batch).actions, rtol=0.05, atol=0.05)
    # Padded instructions: the decoder cannot use FlashAttention there and falls back, without an error.
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(**_batch("cuda", padded=True))
