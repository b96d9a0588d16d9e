"""Rows of ``benchmarks/gpu.py``, each run in its own process (``python benchmarks/_gpu_rows.py ROW``).

A row prints one ``RESULT {json}`` line (a dict, or a list of dicts). :func:`main` sets TF32 for every row
through ``_gpu_common.apply_tf32`` (the same setting for the recipe and FastVLA) and records it in each
result. Row ids:

- ``peak`` — measured bf16 matmul rate (the MFU denominator) and device copy bandwidth.
- ``ckpt:llama`` / ``ckpt:fv-latent`` / ``ckpt:fv-prefix`` — write a random 7B checkpoint to ``--ckpt``.
- ``recipe-train:{q|bf16}:B:CAMS:{gc|nogc}[+prof]`` / ``recipe-infer:CAMS`` — the HF + PEFT + bitsandbytes
  QLoRA recipe, checkpointed or not, with CAMS cameras as 256-token prefixes (``_gpu_recipe.py``).
- ``fv-train:FUSION:CAMS:B:OPTS`` — FastVLA ``openvla-7b-shape`` in 4-bit + LoRA (r=32 on the decoder);
  OPTS is ``-`` or a ``+``-joined list of ``k`` (fused kernels), ``gc`` (gradient checkpointing), ``g``
  (the whole step — forward, backward, AdamW — captured once in a CUDA graph and replayed, bf16 only),
  ``G`` (``fastvla train``'s update, :class:`fastvla.training.graphed_step.GraphedTrainStep`, captured;
  works with ``fp16`` and ``oo``), ``fp16`` (fp16 weights/autocast + loss scaling), ``mem12`` (allocator
  capped at 12 GiB), ``bf16w`` (no 4-bit), ``mr`` (fused kernels plus ``KernelConfig.mlp_recompute``),
  ``gcN`` (gradient checkpointing on the first N decoder layers only), ``ll`` (fused kernels plus
  ``KernelConfig.lora_linear``), ``oo`` (AdamW state offloaded to the CPU,
  :class:`fastvla.training.offload.CPUOffloadAdamW`), ``ao`` (activations saved for the backward offloaded
  to pinned CPU memory; eager only), ``fa`` (``attn_implementation="sdpa_flash"``: PyTorch's FlashAttention-2
  kernels for every attention without a padding mask).
- ``prof`` in OPTS adds a torch.profiler summary of one more step (top ops, time by category).
- ``fv-infer:FUSION:CAMS:OPTS`` — batch-1 chunk forward, 4-bit vs bf16, eager vs CUDA graph; OPTS ``k``.
- ``kernels`` — fused kernel vs eager vs ``torch.compile`` on the 7B shapes.
- ``nf4`` — only the fused NF4 matmul rows of ``kernels`` (decoder and SigLIP shapes, 1/88/256 tokens).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from _gpu_common import (
    CKPT,
    DEVICE,
    DRY_RUN,
    LLAMA,
    OUT,
    TEXT_TOKENS,
    allocated,
    apply_tf32,
    attn_flops,
    checkpointing_state,
    count_recomputed_layers,
    decoder_layers,
    empty_cache,
    fv_preset_overrides,
    gib,
    linears,
    median,
    pct,
    peak,
    peak_reserved,
    reset_peak,
    sync,
    timed_steps,
)


# --------------------------------------------------------------------------------------------- peaks
def row_peak() -> dict[str, Any]:
    from triton.testing import do_bench

    a, b = (torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    ms = do_bench(lambda: a @ b, warmup=100, rep=500, return_mode="median")
    src = torch.randn(2**28, device=DEVICE, dtype=torch.bfloat16)  # 512 MiB
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return {
        "row": "peak",
        "gpu": torch.cuda.get_device_name(0),
        "bf16_matmul_tflops": round(2 * 8192**3 / ms / 1e9, 1),
        "copy_gbps": round(2 * src.numel() * 2 / copy_ms / 1e6, 1),
    }


# ------------------------------------------------------------------------------------- checkpoints
def row_ckpt(kind: str) -> dict[str, Any]:
    path = os.path.join(CKPT, kind)
    t = time.time()
    if os.path.exists(os.path.join(path, "config.json")):
        return {"row": f"ckpt:{kind}", "cached": True}
    torch.manual_seed(0)
    if kind == "llama":
        from transformers import LlamaForCausalLM

        with torch.device(DEVICE):
            torch.set_default_dtype(torch.bfloat16)
            model = LlamaForCausalLM(copy.deepcopy(LLAMA))
            torch.set_default_dtype(torch.float32)
    else:
        from fastvla.model import FastVLAModel

        mode = kind.split("-", 1)[1]
        model = FastVLAModel.from_preset(
            "openvla-7b-shape",
            dtype=torch.bfloat16,
            device=DEVICE,
            attn_implementation="sdpa",
            **{**fv_preset_overrides(), "fusion": {**fv_preset_overrides().get("fusion", {}), "mode": mode}},
        )
    model.save_pretrained(path, max_shard_size="20GB")
    return {"row": f"ckpt:{kind}", "seconds": round(time.time() - t, 1)}


# ------------------------------------------------------------------------------------------ FastVLA
def _opts(text: str) -> set[str]:
    return set() if text in ("-", "") else set(text.split("+"))


def _fv_model(fusion: str, opts: set[str], device: Any = DEVICE) -> Any:
    from fastvla.model import FastVLAModel, bnb_config

    dtype = torch.float16 if "fp16" in opts else torch.bfloat16
    quant = None if "bf16w" in opts else bnb_config(4, compute_dtype=dtype, double_quant="dq0" not in opts)
    return FastVLAModel.from_pretrained(
        os.path.join(CKPT, f"fv-{fusion}"),
        quantization_config=quant,
        dtype=dtype,
        device_map="cuda" if device == "cuda" else {"": device},
        attn_implementation="sdpa_flash" if "fa" in opts else "sdpa",
    )


def _fv_train_model(fusion: str, opts: set[str], device: Any = DEVICE, lora_seed: int | None = None) -> Any:
    """The training rows' model: loaded, checkpointing (``gc``/``gcN``), LoRA r=32 on the decoder, kernels
    (``k``/``mr``/``ll``); returns ``(model, kernel patch)``."""
    from fastvla.kernels import KernelConfig, apply_kernels
    from fastvla.model.lora import add_lora

    model = _fv_model(fusion, opts, device)
    gc_layers = [int(o[2:]) for o in opts if o.startswith("gc") and o[2:].isdigit()]
    if DRY_RUN:  # the tiny decoder has fewer layers
        gc_layers = [min(n, LLAMA.num_hidden_layers - 1) for n in gc_layers]
    if "gc" in opts or gc_layers:
        # No RNG to replay (dropout 0), and saving the RNG state would sync inside a CUDA graph capture.
        kwargs = {"use_reentrant": False, "preserve_rng_state": False}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if gc_layers:
            from fastvla.model import set_checkpointed_layers

            set_checkpointed_layers(model, gc_layers[0])
    if lora_seed is not None:
        torch.manual_seed(lora_seed)
    model = add_lora(model, r=32, alpha=16, dropout=0.0, target_vision=False)
    model.train()
    kernels = KernelConfig(
        enabled=bool(opts & {"k", "mr", "ll"}) and not DRY_RUN,  # Triton needs a GPU
        mlp_recompute="mr" in opts,
        lora_linear="ll" in opts,
    )
    return model, apply_kernels(model, kernels)


def _fv_batch(bsz: int, cams: int, dtype: torch.dtype, with_targets: bool = True) -> dict[str, torch.Tensor]:
    batch = {
        "pixel_values": torch.randn(bsz, cams, 3, 224, 224, device=DEVICE, dtype=dtype),
        "input_ids": torch.randint(4, 32000, (bsz, TEXT_TOKENS), device=DEVICE),
        "attention_mask": torch.ones(bsz, TEXT_TOKENS, device=DEVICE, dtype=torch.long),
        "state": torch.randn(bsz, 8, device=DEVICE),
    }
    if with_targets:
        batch["actions"] = torch.randn(bsz, 8, 7, device=DEVICE)
        batch["action_is_pad"] = torch.zeros(bsz, 8, device=DEVICE, dtype=torch.bool)
    return batch


def _decoder_tokens(fusion: str, cams: int) -> int:
    return (64 if fusion == "latent" else 256 * cams) + TEXT_TOKENS + 1 + 8


def _fv_optimizer(params: list[torch.Tensor], opts: set[str]) -> torch.optim.Optimizer:
    """AdamW for the trainable weights: fused and capturable for ``g``, state on the CPU for ``oo``."""
    if "oo" in opts:
        from fastvla.training.offload import CPUOffloadAdamW

        return CPUOffloadAdamW(params, lr=1e-4)
    return torch.optim.AdamW(params, lr=1e-4, fused=True, capturable="g" in opts)


def _check_opts(opts: set[str]) -> None:
    if "g" in opts and opts & {"fp16", "oo", "G"}:
        raise ValueError("option g captures AdamW itself (bf16 only); use G for fp16 or oo")
    if "ao" in opts and opts & {"g", "G"}:
        raise ValueError("activation offload (ao) copies to fresh pinned host buffers: not capturable")


def _train_step(
    model: Any, opt: Any, static: dict, opts: set[str], dtype: torch.dtype, new_batch: Callable, losses: list
) -> tuple[Callable[[], None], str, Any]:
    """The row's step callable, what it is, and the loss scaler in use (or None)."""
    if "g" in opts and not DRY_RUN:
        return _graph_train_step(model, opt, static, new_batch, losses), "cuda-graph (hand-written)", None
    if "G" in opts:
        from fastvla.training.graphed_step import GraphedTrainStep

        update = GraphedTrainStep(model, opt, static, autocast_dtype=dtype, capture=not DRY_RUN)
        step = lambda: losses.append(update.update([new_batch()])[0])  # noqa: E731
        mode = "GraphedTrainStep, eager (dry run)" if DRY_RUN else "cuda-graph (GraphedTrainStep)"
        return step, mode, update.scaler
    from fastvla.training.offload import activation_offload

    device = next(iter(static.values())).device
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def offload() -> contextlib.AbstractContextManager:
        return activation_offload(device) if "ao" in opts else contextlib.nullcontext()

    def eager_step() -> None:
        for key, value in new_batch().items():
            static[key].copy_(value)
        with torch.autocast(device.type, dtype=dtype), offload():
            loss = model(**static).loss
        losses.append(loss.detach())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return eager_step, "eager", scaler if scaler.is_enabled() else None


def row_fv_train(spec: str) -> dict[str, Any]:
    """Samples/s, peak memory and measured labels of one FastVLA training configuration."""
    _, fusion, cams, bsz, opts = spec.split(":")
    cams, bsz, opts = int(cams), int(bsz), _opts(opts)
    _check_opts(opts)
    dtype = torch.float16 if "fp16" in opts else torch.bfloat16
    if "mem12" in opts and not DRY_RUN:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(12 * 2**30 / total)
    model, patch = _fv_train_model(fusion, opts)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _fv_optimizer(params, opts)
    load = allocated()
    reset_peak()
    base = model.get_base_model()
    layers = decoder_layers(base.language_model)
    static = _fv_batch(bsz, cams, dtype)

    def forward_backward() -> None:
        with torch.autocast(DEVICE, dtype=dtype):
            model(**static).loss.backward()

    state = checkpointing_state(layers)
    recomputed = count_recomputed_layers(layers, forward_backward)  # measured, then forgotten:
    opt.zero_grad(set_to_none=True)  # graphs are captured with no gradients allocated
    losses: list[torch.Tensor] = []
    graph_error = None
    try:
        step, mode, scaler = _train_step(
            model, opt, static, opts, dtype, lambda: _fv_batch(bsz, cams, dtype), losses
        )
    except Exception as err:  # capture failed: report it instead of a number for another configuration
        graph_error = f"{type(err).__name__}: {str(err)[:300]}"
        return {"row": spec, "system": "fastvla", "error": f"graph capture failed: {graph_error}"}
    times = timed_steps(step, warm=3, steps=8)
    seq = _decoder_tokens(fusion, cams)
    n_dec = sum(m.in_features * m.out_features for m in linears(base.language_model))
    n_vis = sum(m.in_features * m.out_features for m in linears(base.vision.tower))
    flops = bsz * seq * 4 * n_dec + attn_flops(32, 4096, bsz, seq) + bsz * cams * 256 * 2 * n_vis
    row = {
        "row": spec,
        "system": "fastvla",
        "fusion": fusion,
        "cameras": cams,
        "quant": "bf16" if "bf16w" in opts else ("nf4/fp16" if "fp16" in opts else "nf4"),
        "batch": bsz,
        "tokens": seq,
        "opts": sorted(opts),
        "mode": mode,
        "cuda_graph": mode.startswith("cuda-graph"),
        "train_mode": model.training and all(m.training for m in layers),
        **state,
        "layers_recomputed": recomputed,
        "attn": "sdpa_flash" if "fa" in opts else "sdpa",
        "optimizer_state": "cpu" if "oo" in opts else "gpu",
        "activations": "cpu (save_on_cpu)" if "ao" in opts else "gpu",
        "memory_cap_gib": 12 if "mem12" in opts else None,
        "kernels": patch.counts,
        "step_s": round(median(times), 4),
        "samples_per_s": round(bsz / median(times), 2),
        "peak_gib": gib(peak()),
        "reserved_gib": gib(peak_reserved()),
        "weights_gib": gib(load),
        "trainable_m": round(sum(p.numel() for p in params) / 1e6, 1),
        "model_tflop_per_step": round(flops / 1e12, 2),
        "first_loss": round(float(losses[0]), 4),
        "last_loss": round(float(losses[-1]), 4),
        "loss_scale": scaler.get_scale() if scaler is not None else None,
    }
    if "prof" in opts and not DRY_RUN:
        row["profile"] = profile_step(step, spec)
    return row


def _graph_train_step(model: Any, opt: Any, static: dict, new_batch: Any, losses: list) -> Any:
    """Capture forward + backward + AdamW once (PyTorch's whole-network capture recipe); return a replay step.

    Inputs live in ``static``; each step copies a fresh batch into it and replays. Gradients were None at
    capture, so the captured backward writes them afresh on every replay (no zeroing needed).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                loss = model(**static).loss
            loss.backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            static_loss = model(**static).loss
        static_loss.backward()
        opt.step()

    def step() -> None:
        for key, value in new_batch().items():
            static[key].copy_(value)
        graph.replay()
        losses.append(static_loss.detach().clone())

    return step


def row_fv_infer(spec: str) -> list[dict[str, Any]]:
    """Batch-1 chunk forward: nf4 through bitsandbytes, nf4 with the fused NF4 kernel, bf16 weights."""
    from fastvla.kernels import KernelConfig, apply_kernels

    _, fusion, cams, opts = spec.split(":")
    cams, opts = int(cams), _opts(opts)
    rows = []
    reference = None

    # (name, kernels, weights): "nf4" double-quantised absmax (QLoRA's default), "nf4-dq0" plain fp32 absmax
    # (one bitsandbytes kernel fewer per layer, +0.4 bit/weight), "bf16" unquantised.
    def kernels(enabled: bool, **kw: Any) -> Any:
        return KernelConfig(enabled=enabled and not DRY_RUN, **kw)  # Triton needs a GPU

    variants = [
        ("nf4", kernels("k" in opts, nf4_inference=False), set()),
        ("nf4+fused-nf4-matmul", kernels(True, nf4_inference=True), set()),
        ("nf4-dq0", kernels("k" in opts, nf4_inference=False), {"dq0"}),
        ("nf4-dq0+fused-nf4-matmul", kernels(True, nf4_inference=True), {"dq0"}),
        ("bf16", kernels("k" in opts), {"bf16w"}),
    ]
    model, loaded = None, None
    for name, config, weights in variants:
        if weights != loaded:
            del model
            gc.collect()
            empty_cache()
            reset_peak()
            model, loaded = _fv_model(fusion, weights).eval(), weights
        patch = apply_kernels(model, config)
        torch.manual_seed(0)
        batch = _fv_batch(1, cams, torch.bfloat16, with_targets=False)
        row: dict[str, Any] = {"row": spec, "system": "fastvla", "quant": name, "fusion": fusion}
        row.update(cameras=cams, kernels=patch.counts)
        try:
            row.update(_infer_times(model, batch, reference))
            reference = reference if reference is not None else row.pop("_actions")
            row.pop("_actions", None)
        except Exception as err:  # a failing variant must not hide the others
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        row["peak_gib"] = gib(peak())
        rows.append(row)
        patch.revert()
        del patch  # it lists the patched modules: keeping it would keep this model alive past the next load
    return rows


def _infer_times(
    model: Any, batch: dict[str, torch.Tensor], reference: torch.Tensor | None
) -> dict[str, Any]:
    """Eager and CUDA-graph latency of one chunk forward; error against the first variant's actions."""
    out: dict[str, Any] = {}
    with torch.inference_mode():
        actions = model(**batch).actions.float()
        ref = actions if reference is None else reference
        out["vs_first_variant_rel_err"] = round(((actions - ref).norm() / ref.norm()).item(), 5)
        out["_actions"] = actions
        eager = timed_steps(lambda: model(**batch), warm=5, steps=50)
        out.update(eager_p50_ms=round(1000 * median(eager), 2), eager_p99_ms=round(1000 * pct(eager, 99), 2))
        try:
            graph_times, rel = _graph_times(model, batch)
            out["graph_vs_eager_rel_err"] = round(rel, 5)
            out.update(
                graph_p50_ms=round(1000 * median(graph_times), 2),
                graph_p99_ms=round(1000 * pct(graph_times, 99), 2),
            )
        except Exception as err:
            out["graph_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    best = min(out.get("graph_p50_ms", 1e9), out["eager_p50_ms"])
    out["actions_per_s"] = round(8 * 1000 / best, 1)
    return out


def _graph_times(model: Any, batch: dict[str, torch.Tensor]) -> tuple[list[float], float]:
    """Replay the forward from a CUDA graph as ``FastVLAPolicy`` does (``policies/graphed_forward.py``)."""
    from fastvla.policies.graphed_forward import GraphedForward

    graphed = GraphedForward(lambda **kw: model(**kw).actions)
    out = graphed(**batch)  # captures
    sync()
    ref = model(**batch).actions.float()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    if not rel < 0.05:
        raise RuntimeError(f"graph replay differs from eager: rel err {rel:.3g}")
    return timed_steps(lambda: graphed(**batch), warm=5, steps=100), rel


# ------------------------------------------------------------------------------------------ profile
def profile_step(step: Callable[[], Any], spec: str) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    sync()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    wall = time.perf_counter() - t
    # Kernels only: CPU-side ops (aten::mm, ...) also carry their kernels' device time.
    events = [
        e
        for e in prof.key_averages()
        if "CUDA" in str(getattr(e, "device_type", "")) and e.self_device_time_total > 0
    ]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    busy = sum(e.self_device_time_total for e in events) / 1e3  # ms
    top = [
        {"op": e.key[:90], "ms": round(e.self_device_time_total / 1e3, 2), "calls": e.count}
        for e in events[:25]
    ]
    name = spec.replace(":", "_").replace("+", "-")
    with open(os.path.join(OUT, f"profile_{name}.txt"), "w") as f:
        f.write(
            prof.key_averages().table(
                sort_by="self_device_time_total", row_limit=60, max_name_column_width=90
            )
        )
    return {
        "profiled_step_ms": round(1000 * wall, 1),
        "cpu_self_ms": round(sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3, 1),
        "gpu_busy_ms": round(busy, 1),
        "categories_ms": _categories(events),
        "top_ops": top,
    }


def _categories(events: list[Any]) -> dict[str, float]:
    rules = [
        ("bnb_dequant", ("dequant", "kdequant")),
        ("matmul", ("gemm", "sm90_xmma", "cutlass", "nvjet", "ampere_bf16", "cublas")),
        ("attention", ("flash", "fmha", "attention", "mem_eff")),
        ("optimizer", ("adam", "multi_tensor")),
        ("fastvla_triton", ("_rms_norm_", "_swiglu_", "_rope_kernel")),
        ("copy_cast", ("copy", "cast", "contiguous", "cat", "index")),
        ("reduction", ("reduce", "norm", "softmax")),
        ("elementwise", ("elementwise", "vectorized", "unrolled")),
    ]
    cats: dict[str, float] = {}
    for e in events:
        key = e.key.lower()
        cat = next((c for c, words in rules if any(w.lower() in key for w in words)), "other")
        cats[cat] = round(cats.get(cat, 0.0) + e.self_device_time_total / 1e3, 2)
    return cats


# --------------------------------------------------------------------------------------------- main
def _kernels_row(_row: str) -> Any:
    from _gpu_kernels import row_kernels  # beside this file (the script's folder is on sys.path)

    return row_kernels()


def _nf4_row(_row: str) -> Any:
    from _gpu_kernels import _nf4_rows

    return _nf4_rows()


def _recipe(name: str) -> Callable[[str], Any]:
    def run(row: str) -> Any:
        import _gpu_recipe

        return getattr(_gpu_recipe, name)(row)

    return run


#: Row kind (the id up to the first ``:``) -> function of the whole id.
ROW_KINDS: dict[str, Callable[[str], Any]] = {
    "peak": lambda row: row_peak(),
    "ckpt": lambda row: row_ckpt(row.split(":")[1]),
    "recipe-train": _recipe("row_recipe_train"),
    "recipe-infer": _recipe("row_recipe_infer"),
    "fv-train": row_fv_train,
    "fv-infer": row_fv_infer,
    "kernels": _kernels_row,
    "nf4": _nf4_row,
}


def main(row: str) -> Any:
    """Run one row with the run's TF32 setting applied first; every result dict records that setting."""
    kind = row.split(":")[0]
    if kind not in ROW_KINDS:
        raise SystemExit(f"unknown row {row!r}; kinds: {sorted(ROW_KINDS)} (see this file's docstring)")
    precision = apply_tf32()
    result = ROW_KINDS[kind](row)
    for r in result if isinstance(result, list) else [result]:
        r.update(precision)
    return result


if __name__ == "__main__":
    torch.manual_seed(0)
    print("RESULT " + json.dumps(main(sys.argv[1])), flush=True)
