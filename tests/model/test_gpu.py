"""CUDA paths: building directly on the GPU in bf16, 4-bit + LoRA training step, the 7B-shaped preset."""

from __future__ import annotations

import pytest
import torch

from fastvla.model import FastVLAModel, add_lora, bnb_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def cuda_inputs(b: int, cams: int, size: int, vocab: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.randn(b, cams, 3, size, size, device="cuda", dtype=dtype),
        "input_ids": torch.randint(4, vocab, (b, 12), device="cuda"),
        "attention_mask": torch.ones(b, 12, device="cuda", dtype=torch.long),
        "state": torch.randn(b, 8, device="cuda"),
        "actions": torch.rand(b, 8, 7, device="cuda") * 2 - 1,
    }


def test_tiny_bf16_on_cuda() -> None:
    model = FastVLAModel.from_preset("tiny-vit", device="cuda", dtype=torch.bfloat16)
    assert all(p.device.type == "cuda" and p.dtype == torch.bfloat16 for p in model.parameters())
    out = model(**cuda_inputs(2, 2, 64, 256, torch.bfloat16))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_tiny_4bit_lora_step_on_cuda(tmp_path) -> None:
    FastVLAModel.from_preset("tiny-vit").save_pretrained(tmp_path)
    model = FastVLAModel.from_pretrained(
        tmp_path, quantization_config=bnb_config(4, compute_dtype=torch.bfloat16), device_map="cuda"
    )
    peft_model = add_lora(model, r=8)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    inputs = cuda_inputs(2, 2, 64, 256, torch.bfloat16)
    losses = []
    for _ in range(5):
        loss = peft_model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
    reason="needs a GPU with >= 40 GiB",
)
def test_openvla_7b_shape_builds_on_cuda_in_bf16() -> None:
    torch.cuda.reset_peak_memory_stats()
    model = FastVLAModel.from_preset("openvla-7b-shape", device="cuda", dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < n < 7.8e9
    assert torch.cuda.max_memory_allocated() < 2.3 * n  # bf16 weights, never an fp32 copy
    with torch.no_grad():
        out = model(**cuda_inputs(1, 2, 224, 32000, torch.bfloat16))
    assert out.actions.shape == (1, 8, 7) and torch.isfinite(out.actions.float()).all()
