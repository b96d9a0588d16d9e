"""What ``benchmarks/gpu.py`` derives from a run's rows: MFU, ratios, labels, the text table and the README.

Ratios are taken only within one run's JSON, and only against the **nearest recipe point** on the
recipe's speed/memory curve: among the recipe rows of the same batch, camera count and weight precision,
the one whose peak memory is closest (in log scale) to the FastVLA row's. The chosen point is named next to
every ratio, with the memory ratio, so "3x faster" never hides "at 1.7x the memory".

Labels say what ran, from the fields a row recorded (training mode, layers really recomputed, TF32,
tokens, cameras), never from the row id. Rows of runs made before these fields existed are read by
:func:`normalise_legacy`, which states what is known about them (the first recipe copy ran its decoder in
eval mode, so the checkpointing it asked for never happened, and it ran without TF32).

The README's GPU tables are generated from a run's JSON by :func:`render_into` between the markers
:data:`BEGIN` and :data:`END` (``python benchmarks/gpu.py --render-readme JSON``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import _common

BEGIN = (
    "<!-- gpu-tables:begin (generated: python benchmarks/gpu.py --render-readme JSON; edit that script) -->"
)
END = "<!-- gpu-tables:end -->"
RECIPE = "hf+peft+bnb recipe"


# ---------------------------------------------------------------------------------------------- legacy
def normalise_legacy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of runs made before the fair recipe, with the fields today's rows record filled in as known.

    Old ``base-train:q:B:SEQ`` rows asked for checkpointing but their decoder stayed in eval mode (Hugging
    Face skips checkpointing there) and TF32 was off; old FastVLA training rows ran with TF32 on; old
    inference rows left TF32 off. Their checkpointing is taken from the row id (not measured).
    """
    out = []
    for row in rows:
        r = dict(row)
        rid = str(r.get("row", ""))
        if "tf32" in r or ("error" in r and "system" not in r):
            out.append(r)
            continue
        if rid.startswith("base-train") and "samples_per_s" in r:
            r.update(system=RECIPE, cameras=(r["tokens"] - 24) // 256, checkpointing_requested=True)
            r.update(train_mode=False, layers=32, layers_checkpointing_active=0, layers_recomputed=None)
            r.update(
                legacy="recipe before the fix: decoder in eval mode, checkpointing requested but skipped"
            )
            r["tf32"] = False
        elif rid.startswith("base-infer"):
            r.update(system=RECIPE, cameras=1, prompt_tokens=272, tf32=False)
        elif rid.startswith("fv-train") and "samples_per_s" in r:
            opts = set(r.get("opts", []))
            n = next(
                (int(o[2:]) for o in opts if o.startswith("gc") and o[2:].isdigit()),
                32 if "gc" in opts else 0,
            )
            r.update(
                train_mode=True, layers=32, layers_checkpointing_active=n, layers_recomputed=None, tf32=True
            )
            r.setdefault("mode", "cuda-graph (hand-written)" if r.get("cuda_graph") else "eager")
        elif rid.startswith("fv-ddp"):
            r["tf32"] = True
        elif rid.startswith("fv-infer"):
            r["tf32"] = False
        out.append(r)
    return out


# ------------------------------------------------------------------------------------------ ratios, MFU
def _precision_key(row: dict[str, Any]) -> str | None:
    """Which recipe precision a row compares with: nf4 (QLoRA) or bf16 weights; None for fp16 rows."""
    quant = row.get("quant")
    return quant if quant in ("nf4", "bf16") else None


def nearest_recipe_point(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The recipe row of the same batch, cameras and precision whose peak memory is nearest ``row``'s.

    Returns:
        ``{"row", "point", "samples_per_s", "peak_gib", "speed_x", "memory_x", "dominates"}``, or None when
        the run holds no such recipe row.
    """
    key = _precision_key(row)
    candidates = [
        r
        for r in rows
        if r.get("system") == RECIPE
        and "samples_per_s" in r
        and r.get("batch") == row.get("batch")
        and r.get("cameras") == row.get("cameras")
        and r.get("quant") == key
    ]
    if key is None or not candidates or not row.get("peak_gib"):
        return None
    best = min(candidates, key=lambda r: abs(math.log(row["peak_gib"] / r["peak_gib"])))
    speed = row["samples_per_s"] / best["samples_per_s"]
    memory = row["peak_gib"] / best["peak_gib"]
    return {
        "row": best["row"],
        "point": recipe_point_name(best),
        "samples_per_s": best["samples_per_s"],
        "peak_gib": best["peak_gib"],
        "speed_x": round(speed, 2),
        "memory_x": round(memory, 2),
        "dominates": speed >= 1 and memory <= 1,
    }


def recipe_point_name(row: dict[str, Any]) -> str:
    """``checkpointed`` / ``not checkpointed``: what the recipe row really did."""
    return "checkpointed" if row.get("layers_checkpointing_active") else "not checkpointed"


def add_derived(rows: list[dict[str, Any]]) -> None:
    """MFU against the run's measured matmul peak, and the ratio to the nearest recipe point."""
    peak = next((r.get("bf16_matmul_tflops") for r in rows if r.get("row") == "peak"), None)
    for r in rows:
        if "model_tflop_per_step" in r and "step_s" in r and peak:
            r["mfu"] = round(r["model_tflop_per_step"] / r["step_s"] / peak, 3)
        if r.get("system") == "fastvla" and "samples_per_s" in r:
            r["vs_recipe"] = nearest_recipe_point(r, rows)


def add_ddp(rows: list[dict[str, Any]]) -> None:
    """Scaling of each multi-GPU row against the 1-GPU row of the same per-GPU batch, and the largest loss
    difference against the 1-GPU row of the same global batch (the same samples)."""
    ddp = [r for r in rows if r.get("system") == "fastvla-ddp" and "samples_per_s" in r]
    one = [o for o in ddp if o["gpus"] == 1]
    for r in ddp:
        if r["gpus"] == 1:
            continue
        same_batch = next((o for o in one if o["batch"] == r["batch"]), None)
        if same_batch:
            r["scaling_vs_1gpu"] = round(r["samples_per_s"] / same_batch["samples_per_s"], 3)
        same_global = next((o for o in one if o["global_batch"] == r["global_batch"]), None)
        if same_global:
            n = min(len(r["losses"]), len(same_global["losses"]))
            diffs = [abs(a - b) for a, b in zip(r["losses"][:n], same_global["losses"][:n])]
            r["loss_max_abs_diff_vs_1gpu"] = round(max(diffs), 6)
            r["loss_max_rel_diff_vs_1gpu"] = round(
                max(d / max(abs(b), 1e-9) for d, b in zip(diffs, same_global["losses"])), 6
            )


# ----------------------------------------------------------------------------------------------- labels
def _cams(n: int) -> str:
    return f"{n} camera" + ("s" if n != 1 else "")


def _tf32(row: dict[str, Any]) -> str:
    return "TF32 on" if row.get("tf32") else "TF32 off"


def _checkpointing(row: dict[str, Any]) -> str:
    total = row.get("layers", 32)
    if row.get("layers_recomputed") is not None:
        n = row["layers_recomputed"]
        kind = ", non-reentrant" if n and row.get("use_reentrant") is False else ""
        return f"checkpointing {n}/{total} layers (measured{kind})" if n else "no checkpointing (measured)"
    if row.get("legacy"):
        return "checkpointing requested but skipped"
    n = row.get("layers_checkpointing_active", 0)
    return f"checkpointing {n}/{total} layers (from the row id)" if n else "no checkpointing"


def label(row: dict[str, Any]) -> str:
    """What a training row ran, in words, from its recorded fields."""
    if row.get("system") == RECIPE:
        mode = "train mode" if row.get("train_mode") else "decoder in eval mode"
        return (
            f"recipe (HF+PEFT+bnb, {row['quant']}), {_cams(row['cameras'])} as {row['tokens']} prefix "
            f"tokens, {mode}, {_checkpointing(row)}, {_tf32(row)}"
        )
    opts = set(row.get("opts", []))
    parts = [
        f"FastVLA {row['fusion']} fusion, {_cams(row['cameras'])}, {row['tokens']} decoder tokens, "
        f"{row['quant']}",
        row.get("mode", "eager"),
        _checkpointing(row),
    ]
    if opts & {"k", "mr", "ll"} and any((row.get("kernels") or {}).values()):
        parts.append("fused kernels")
    if row.get("optimizer_state") == "cpu":
        parts.append("AdamW state on CPU")
    if str(row.get("activations", "")).startswith("cpu"):
        parts.append("activations on CPU")
    if row.get("attn") == "sdpa_flash":
        parts.append("SDPA flash")
    if row.get("memory_cap_gib"):
        parts.append(f"allocator capped at {row['memory_cap_gib']} GiB")
    if row.get("batch") != 8:
        parts.append(f"batch {row['batch']}")
    parts.append(_tf32(row))
    return ", ".join(parts)


def _ratio(row: dict[str, Any]) -> str:
    vs = row.get("vs_recipe")
    if not vs:
        return ""
    point = f"{vs['point']}: {vs['samples_per_s']}/s, {vs['peak_gib']} GiB"
    return f"{vs['speed_x']}× at {vs['memory_x']}× memory (vs {point})"


# --------------------------------------------------------------------------------------- console table
def table(rows: list[dict[str, Any]]) -> str:
    """The run as plain text (printed at the end of ``gpu.py``)."""
    lines = ["", "## Training (one process per row)"]
    for r in rows:
        if "samples_per_s" in r and r.get("system") in (RECIPE, "fastvla"):
            lines.append(
                f"{r['row']:36} {r['samples_per_s']:>7} samples/s {1000 * r['step_s']:>6.0f} ms "
                f"{r['peak_gib']:>6} GiB  MFU {r.get('mfu', '-')}  {_ratio(r)}"
            )
            lines.append(f"{'':36} {label(r)}")
    ddp = [r for r in rows if r.get("system") == "fastvla-ddp" and "samples_per_s" in r]
    if ddp:
        lines += ["", "## Data parallel (NCCL all-reduce between graphed forward/backward and AdamW)"]
        for r in ddp:
            extra = f" scaling {r['scaling_vs_1gpu']}x" if "scaling_vs_1gpu" in r else ""
            if "loss_max_abs_diff_vs_1gpu" in r:
                extra += f" loss diff vs 1 GPU (same samples) max {r['loss_max_abs_diff_vs_1gpu']}"
            lines.append(
                f"{r['row']:30} {r['gpus']} GPU x batch {r['batch']}: {r['samples_per_s']} samples/s, "
                f"{1000 * r['step_s']:.0f} ms/update, peak {r['peak_gib']} GiB;{extra}"
            )
    lines += ["", "## Inference, batch 1"]
    for r in rows:
        if "forward_p50_ms" in r:
            lines.append(
                f"{r['row']:16} {r['quant']:5} {_cams(r.get('cameras', 1))} "
                f"({r.get('prompt_tokens')} tokens): "
                f"forward p50 {r['forward_p50_ms']} p99 {r['forward_p99_ms']} ms; "
                f"7-token decode {r['ar_7tok_ms']} ms ({r['actions_per_s_ar']} actions/s)"
            )
        if "eager_p50_ms" in r:
            graph = (
                f"graph p50 {r['graph_p50_ms']} p99 {r['graph_p99_ms']}" if "graph_p50_ms" in r else "graph -"
            )
            lines.append(
                f"{r['row']:20} {r['quant']:5} eager p50 {r['eager_p50_ms']} p99 {r['eager_p99_ms']}; "
                f"{graph} ms; {r['actions_per_s']} actions/s (chunk 8)"
            )
    for r in rows:
        if "eager_fwd_us" in r:
            lines.append(
                f"kernel {r['op']:26} eager {r['eager_fwd_us']}|{r['eager_fwdbwd_us']}  "
                f"compile {r['compile_fwd_us']}|{r['compile_fwdbwd_us']}  "
                f"triton {r['triton_fwd_us']}|{r['triton_fwdbwd_us']} us (fwd|fwd+bwd)"
            )
        if "fused_us" in r:
            lines.append(
                f"nf4 {r['op']:34} bnb {r['bnb_us']} us, fused {r['fused_us']} us, "
                f"bf16 weight {r['bf16_us']} us"
            )
        prof = r.get("profile")
        if prof:
            cats = sorted(prof["categories_ms"].items(), key=lambda x: -x[1])
            lines.append(
                f"\nprofile {r['row']}: GPU busy {prof['gpu_busy_ms']} of {prof['profiled_step_ms']} ms"
            )
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in cats))
        if "error" in r:
            lines.append(f"ERROR {r['row']}: {r['error'][:300]}")
        if r.get("row") == "peak":
            lines.append(
                f"\npeak: {r['gpu']} bf16 matmul {r['bf16_matmul_tflops']} TFLOP/s, "
                f"copy {r['copy_gbps']} GB/s"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- README
def _md_training(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| training, batch 8 unless labelled | samples/s | peak GiB | vs nearest recipe point, same run "
        "| MFU |",
        "|---|---|---|---|---|",
    ]
    train = [r for r in rows if r.get("system") in (RECIPE, "fastvla") and "samples_per_s" in r]
    for r in sorted(train, key=lambda r: (r.get("system") != RECIPE, r.get("cameras", 0))):
        out.append(
            f"| {label(r)} | {r['samples_per_s']} | {r['peak_gib']} | {_ratio(r)} | {r.get('mfu', '')} |"
        )
    for r in rows:
        if r.get("system") == "fastvla-ddp" and "scaling_vs_1gpu" in r:
            out.append(
                f"| FastVLA {r['fusion']} fusion, {_cams(r['cameras'])}, **{r['gpus']} GPUs** data parallel "
                f"(NCCL), batch {r['batch']} per GPU, {_tf32(r)} | {r['samples_per_s']} | "
                f"{r['peak_gib']} per GPU | {r['scaling_vs_1gpu']}× one GPU | |"
            )
    return out


def _md_inference(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| inference, batch 1, one chunk of 8 actions | p50 ms | p99 ms | actions/s |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if "ar_7tok_ms" in r:
            what = (
                f"recipe, {r['quant']}, {_cams(r.get('cameras', 1))} ({r.get('prompt_tokens')}-token prompt)"
            )
            out.append(
                f"| {what}, 7-token autoregressive decoding | {r['ar_7tok_ms']} | | {r['actions_per_s_ar']} |"
            )
            out.append(f"| {what}, one forward | {r['forward_p50_ms']} | {r['forward_p99_ms']} | |")
    for r in rows:
        if "graph_p50_ms" in r:
            out.append(
                f"| FastVLA {r['fusion']} fusion, {_cams(r['cameras'])}, {r['quant']}, CUDA graph | "
                f"{r['graph_p50_ms']} | {r['graph_p99_ms']} | {r['actions_per_s']} |"
            )
    return out


def _md_notes(doc: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    tf32 = {
        bool(r.get("tf32")) for r in rows if r.get("system") in (RECIPE, "fastvla") and "samples_per_s" in r
    }
    if len(tf32) > 1:
        notes.append(
            "**TF32 differs between the training rows of this run**: their ratios are not like for like."
        )
    if any(r.get("legacy") for r in rows):
        notes.append(
            "**This run predates the fair recipe**: its recipe rows ran with the decoder in eval mode "
            "(checkpointing requested but skipped) and without TF32, and only their un-checkpointed point "
            "was measured. Rerun `benchmarks/gpu.py` and render again."
        )
    recipe_cams = {r.get("cameras") for r in rows if "ar_7tok_ms" in r}
    fv_cams = {r.get("cameras") for r in rows if "graph_p50_ms" in r}
    if recipe_cams and fv_cams and recipe_cams != fv_cams:
        notes.append(
            f"Camera counts differ in the inference table: recipe {sorted(recipe_cams)}, "
            f"FastVLA {sorted(fv_cams)}."
        )
    failed = [r["row"] for r in rows if "error" in r]
    if failed:
        notes.append("Rows that failed in this run: " + ", ".join(f"`{f}`" for f in failed) + ".")
    return notes


def render_markdown(doc: dict[str, Any], source: str) -> str:
    """The README's GPU section for one run's JSON (``doc``), naming ``source``."""
    rows = normalise_legacy(doc.get("rows", []))
    add_derived(rows)
    add_ddp(rows)
    versions = ", ".join(
        f"{k} {doc[k]}" for k in ("torch", "transformers", "peft", "bitsandbytes") if k in doc
    )
    head = [
        f"Run `{source}`: {doc.get('gpu', '?')} ({versions}), started {str(doc.get('started', '?'))[:16]}. "
        "Random 7B-shaped weights, 4-bit NF4 + LoRA r=32 unless labelled. Each ratio compares with the "
        "recipe point (checkpointed or not) of the same batch and cameras whose peak memory is nearest, "
        "measured in the same run.",
        "",
    ]
    body = head + _md_training(rows) + [""] + _md_inference(rows)
    notes = _md_notes(doc, rows)
    for note in notes:
        body += ["", note]
    return "\n".join(body)


def render_into(json_path: Path, targets: list[Path], source: str | None = None) -> list[Path]:
    """Render ``json_path`` into every target file that holds the markers; returns the files changed."""
    doc = json.loads(Path(json_path).read_text())
    body = render_markdown(doc, source or Path(json_path).as_posix())
    return _common.render_section(targets, "gpu-tables", body)
