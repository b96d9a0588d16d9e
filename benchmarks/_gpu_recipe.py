"""The reference recipe's rows of ``benchmarks/gpu.py``: plain transformers + PEFT + bitsandbytes QLoRA.

The recipe is the one OpenVLA's LoRA fine-tuning uses, on a Llama-2-7B-shaped decoder with random weights
fed VLA-like sequences: 256 visual tokens per camera as prefix, then 24 text tokens whose last 8 carry the
loss (280 tokens for one camera, 536 for two). It follows the fixed reference script exactly
(``docs/performance.md`` keeps its facts):

- ``from_pretrained`` returns the model in **eval mode**, where Hugging Face skips gradient checkpointing, so
  the model is put in training mode (``train()``) after PEFT wraps it; a first copy of the recipe did not,
  and its "checkpointed" rows were really un-checkpointed (26.5 GiB at batch 8 x 280 tokens);
- checkpointing is **non-reentrant** (``use_reentrant=False``): reentrant checkpointing with
  ``inputs_embeds`` (no input requires grad) crashes in training mode;
- TF32 is whatever ``_gpu_common.apply_tf32`` set for every row of the run;
- the recipe is a speed/memory curve, not one point: every run measures it checkpointed (lean, slow) and
  not checkpointed (fast, big), and FastVLA rows are compared with the nearest of the two.

Row ids: ``recipe-train:{q|bf16}:B:CAMS:{gc|nogc}[+prof]`` and ``recipe-infer:CAMS``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import torch
from _gpu_common import (
    ACTION_TOKENS,
    CKPT,
    DEVICE,
    DRY_RUN,
    LLAMA,
    allocated,
    attn_flops,
    checkpointing_state,
    count_recomputed_layers,
    decoder_layers,
    empty_cache,
    gib,
    linears,
    median,
    pct,
    peak,
    recipe_tokens,
    reset_peak,
    timed_steps,
)
from torch import nn

SYSTEM = "hf+peft+bnb recipe"
#: The recipe's adapters: LoRA r=32 on every linear of the decoder, no dropout.
LORA = dict(r=32, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def llama_kwargs(quant: bool, device_map: Any = None, dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """``from_pretrained`` arguments of the recipe's model: bf16 on GPU 0, SDPA; QLoRA's NF4 if ``quant``."""
    from transformers import BitsAndBytesConfig

    if device_map is None:
        device_map = {"": "cpu"} if DRY_RUN else {"": 0}
    kw: dict[str, Any] = dict(dtype=dtype, device_map=device_map, attn_implementation="sdpa")
    if quant:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return kw


def build_recipe_model(
    path: str,
    *,
    quant: bool,
    checkpointing: bool,
    device_map: Any = None,
    dtype: torch.dtype = torch.bfloat16,
) -> nn.Module:
    """The recipe's trainable model, as the fixed reference builds it.

    Args:
        path: a saved ``LlamaForCausalLM``.
        quant: load the decoder in 4-bit NF4 (QLoRA, through ``prepare_model_for_kbit_training``).
        checkpointing: non-reentrant gradient checkpointing on every decoder layer.
        device_map: ``from_pretrained``'s placement (default GPU 0; ``{"": "cpu"}`` in the CPU tests).
        dtype: weight dtype.

    Returns:
        The PEFT model, in training mode.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path, **llama_kwargs(quant, device_map, dtype))
    ckpt_kwargs = {"use_reentrant": False}  # inputs_embeds carry no grad: reentrant would crash
    if quant:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=ckpt_kwargs
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    model = get_peft_model(model, LoraConfig(**LORA))
    model.train()  # from_pretrained left it in eval mode, where HF skips checkpointing
    return model


def recipe_batch(
    bsz: int, seq: int, hidden: int, vocab: int, device: Any, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prefix embeddings (B, S, D) and labels (B, S): -100 except the last 8 (action) tokens, drawn
    from the vocabulary's top ids (31000-31999 for the 7B shape, as the reference)."""
    emb = torch.randn(bsz, seq, hidden, device=device, dtype=dtype) * 0.02
    labels = torch.full((bsz, seq), -100, device=device, dtype=torch.long)
    low, high = min(31000, vocab // 2), min(32000, vocab)
    labels[:, -ACTION_TOKENS:] = torch.randint(low, high, (bsz, ACTION_TOKENS), device=device)
    return emb, labels


def recipe_step(
    model: nn.Module, opt: torch.optim.Optimizer, bsz: int, seq: int, dtype: torch.dtype = torch.bfloat16
) -> Callable[[], None]:
    """One training step of the recipe: a fresh batch of ``dtype`` embeddings (bf16, as the reference),
    forward with labels, backward, AdamW."""
    config = model.get_base_model().config
    device = next(p.device for p in model.parameters() if p.requires_grad)

    def step() -> None:
        emb, labels = recipe_batch(bsz, seq, config.hidden_size, config.vocab_size, device, dtype)
        model(inputs_embeds=emb, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def parse_train_spec(spec: str) -> dict[str, Any]:
    """``recipe-train:q:8:1:gc+prof`` -> quant, batch, cameras, tokens, checkpointing, flags.

    Raises:
        ValueError: a malformed id (the message shows the expected form).
    """
    parts = spec.split(":")
    if len(parts) != 5 or parts[1] not in ("q", "bf16"):
        raise ValueError(f"recipe row {spec!r}: expected recipe-train:{{q|bf16}}:BATCH:CAMERAS:{{gc|nogc}}")
    flags = set(parts[4].split("+"))
    gc_flag = flags & {"gc", "nogc"}
    if len(gc_flag) != 1:
        raise ValueError(f"recipe row {spec!r}: say gc (checkpointed) or nogc, exactly one")
    cams = int(parts[3])
    return {
        "quant": parts[1] == "q",
        "batch": int(parts[2]),
        "cameras": cams,
        "tokens": recipe_tokens(cams),
        "checkpointing": gc_flag == {"gc"},
        "flags": flags - gc_flag,
    }


def row_recipe_train(spec: str) -> dict[str, Any]:
    """Samples/s and peak memory of the recipe; the labels are read from the model and measured."""
    p = parse_train_spec(spec)
    bsz, seq = p["batch"], p["tokens"]
    path = os.path.join(CKPT, "llama")
    model = build_recipe_model(path, quant=p["quant"], checkpointing=p["checkpointing"])
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    load = allocated()
    reset_peak()
    step = recipe_step(model, opt, bsz, seq)
    layers = decoder_layers(model)
    state = checkpointing_state(layers)
    recomputed = count_recomputed_layers(layers, step)  # the first warm-up step, measured
    times = timed_steps(step, warm=1, steps=6)
    n_lin = sum(m.in_features * m.out_features for m in linears(model) if hasattr(m, "in_features"))
    flops = bsz * seq * 4 * n_lin + attn_flops(LLAMA.num_hidden_layers, LLAMA.hidden_size, bsz, seq)
    row = {
        "row": spec,
        "system": SYSTEM,
        "quant": "nf4" if p["quant"] else "bf16",
        "batch": bsz,
        "cameras": p["cameras"],
        "tokens": seq,
        "checkpointing_requested": p["checkpointing"],
        "train_mode": all(m.training for m in model.modules()),
        **state,
        "layers_recomputed": recomputed,
        "step_s": round(median(times), 4),
        "samples_per_s": round(bsz / median(times), 2),
        "peak_gib": gib(peak()),
        "weights_gib": gib(load),
        "model_tflop_per_step": round(flops / 1e12, 2),
    }
    if "prof" in p["flags"] and not DRY_RUN:
        from _gpu_rows import profile_step

        row["profile"] = profile_step(step, spec)
    return row


def row_recipe_infer(spec: str) -> list[dict[str, Any]]:
    """The recipe's inference, 4-bit and bf16: one forward and 7-token decoding of a ``CAMS``-camera prompt.

    The prompt is the training sequence without its 8 action tokens (272 tokens for 1 camera, 528 for 2),
    so it matches the camera count of the FastVLA inference rows it is shown with.
    """
    from transformers import LlamaForCausalLM

    cams = int(spec.split(":")[1])
    prompt = recipe_tokens(cams) - ACTION_TOKENS
    rows = []
    for quant in (True, False):
        m = LlamaForCausalLM.from_pretrained(os.path.join(CKPT, "llama"), **llama_kwargs(quant)).eval()
        emb = torch.randn(1, prompt, LLAMA.hidden_size, device=DEVICE, dtype=torch.bfloat16) * 0.02
        with torch.inference_mode():
            fwd = timed_steps(lambda m=m, emb=emb: m(inputs_embeds=emb), warm=3, steps=30)
            gen = timed_steps(
                lambda m=m, emb=emb: m.generate(
                    inputs_embeds=emb, max_new_tokens=7, min_new_tokens=7, do_sample=False, pad_token_id=0
                ),
                warm=2,
                steps=8,
            )
        rows.append(
            {
                "row": spec,
                "system": SYSTEM,
                "quant": "nf4" if quant else "bf16",
                "cameras": cams,
                "prompt_tokens": prompt,
                "forward_p50_ms": round(1000 * median(fwd), 2),
                "forward_p99_ms": round(1000 * pct(fwd, 99), 2),
                "ar_7tok_ms": round(1000 * median(gen), 1),
                "actions_per_s_ar": round(1 / median(gen), 1),
            }
        )
        del m
        gc.collect()
        empty_cache()
    return rows
