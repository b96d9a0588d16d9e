"""GPU benchmark: FastVLA vs the HF + PEFT + bitsandbytes QLoRA recipe, side by side in one run.

Every configuration runs in its own process (``benchmarks/_gpu_rows.py ROW``) so each peak-memory figure is
its own; random 7B checkpoints are written once per run to local disk and reused by every row. Rows:

- the baseline recipe (``../shared/reference/gpu_baseline.py`` reproduced): 4-bit batch 4/8 at 280 and 536
  tokens, bf16 LoRA batch 8, inference (one forward, 7-token decoding), and a profile of its step;
- FastVLA ``openvla-7b-shape`` in 4-bit + LoRA: prefix fusion with one camera (same decoder length as the
  baseline's 280) and cross-attention ("latent") fusion with two cameras (against the baseline's 536),
  with/without the fused Triton kernels and gradient checkpointing; peak memory; MFU against the bf16
  matmul rate measured in the same run;
- inference: a batch-1 action-chunk forward, 4-bit vs bf16, eager vs CUDA graph, p50/p99, actions/s;
- the 2xT4 budget emulated: fp16 + loss scaling with the allocator capped at 12 GiB;
- fused kernels vs eager vs ``torch.compile``.

    python benchmarks/gpu.py --plan fastvla        # on a GPU machine, ~8 min; --plan all ~10 min
    python benchmarks/gpu.py --rows peak,kernels   # a subset; see _gpu_rows.py for the row ids

Through the device tool (its image has torch, triton, peft, transformers 5.17 but no bitsandbytes, and
``fastvla.model`` needs transformers >= 5.24): download ``bitsandbytes==0.50.2``, ``transformers==5.24.0``
and ``regex`` wheels for Python 3.12 into an ignored ``.wheels/``, carry it, and start the command with
``pip install --no-index --no-deps --target /tmp/site .wheels/*.whl`` and
``PYTHONPATH=/tmp/site:<a folder holding a link to fastvla/>`` (benchmarks/NOTES.md has the exact line).

Prints a table last and writes JSON (``--json``; default ``$OUT/gpu.json`` under the device tool, else
``benchmarks/results/gpu-<card>-<date>.json``).
"""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROWS = HERE / "_gpu_rows.py"
DDP_ROWS = HERE / "_gpu_ddp.py"

BASELINE = [
    "base-train:q:4:280",
    "base-train:q:8:280",
    "base-train:q:4:536",
    "base-train:q:8:536",
    "base-train:bf16:8:280",
    "base-infer",
]
FASTVLA = [
    "fv-train:prefix:1:8:k+mr+ll+g",
    "fv-train:prefix:1:8:k+mr+ll+gc6+g",
    "fv-train:latent:2:8:k+mr+ll+g",
    "fv-train:latent:2:8:g",
    "fv-train:latent:2:16:k+mr+ll+g",
    "fv-infer:latent:2:k",
    "fv-train:latent:2:8:k+fp16+mem12",
]
#: Data parallel (needs 2 GPUs): per-GPU batch 8 on 1 vs 2 GPUs (scaling), and global batch 16 on 1 GPU vs
#: 2 x 8 (the same samples: losses must agree update by update).
DDP = [
    "fv-ddp:1:latent:2:8:k+mr+ll+g",
    "fv-ddp:2:latent:2:8:k+mr+ll+g",
    "fv-ddp:1:latent:2:16:k+mr+ll+g",
]
PLANS = {
    "baseline": ["peak", *BASELINE, "base-train:q:8:280:prof", "kernels"],
    "fastvla": ["peak", "base-train:q:8:280", "base-train:q:8:536", *FASTVLA],
    "all": ["peak", *BASELINE, *FASTVLA, "kernels"],
    "ddp": ["peak", *DDP],
}
#: Rough seconds per row, to skip rows that cannot finish inside --budget-s.
COST = {"peak": 15, "kernels": 90, "ckpt": 60, "base-infer": 70, "fv-infer": 80}


def _with_checkpoints(rows: list[str]) -> list[str]:
    """``rows`` with each checkpoint-writing step inserted before the first row that reads it."""
    out: list[str] = []
    for row in rows:
        need = None
        if row.startswith("base-"):
            need = "ckpt:llama"
        elif row.startswith(("fv-train", "fv-infer")):
            need = f"ckpt:fv-{row.split(':')[1]}"
        elif row.startswith("fv-ddp"):
            need = f"ckpt:fv-{row.split(':')[2]}"
        if need and need not in out:
            out.append(need)
        if row not in out:
            out.append(row)
    return out


def run_row(row: str, timeout: float, log: Path) -> Any:
    """Run one row in a fresh process; its ``RESULT`` line, or an error record."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROWS), row]
    if row.startswith("fv-ddp:"):  # one process per GPU
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*launcher, f"--nproc-per-node={row.split(':')[1]}", str(DDP_ROWS), row]
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = f"timeout after {timeout:.0f}s", -1
    with log.open("a") as f:
        f.write(f"\n===== {row} rc={rc} {time.time() - t:.0f}s\n{out[-4000:]}\n{err[-6000:]}\n")
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            for r in result if isinstance(result, list) else [result]:
                r["wall_s"] = round(time.time() - t, 1)
            return result
    tail = (err or out).strip().splitlines()[-3:]
    return {"row": row, "error": " | ".join(tail)[-400:], "wall_s": round(time.time() - t, 1)}


def run_command(name: str, cmd: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """A non-row step (GPU tests, benchmarks/train.py): exit status and output tail."""
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        out, rc = f"timeout after {timeout:.0f}s", -1
    with log.open("a") as f:
        f.write(f"\n===== {name} rc={rc}\n{out[-8000:]}\n")
    return {"row": name, "rc": rc, "tail": out.strip().splitlines()[-3:], "wall_s": round(time.time() - t, 1)}


# -------------------------------------------------------------------------------------------- table
def add_derived(rows: list[dict[str, Any]]) -> None:
    """MFU against the measured matmul peak, and speed-ups against the baseline row of equal length."""
    peak = next((r.get("bf16_matmul_tflops") for r in rows if r.get("row") == "peak"), None)
    base = {
        (r["batch"], r["tokens"]): r["samples_per_s"]
        for r in rows
        if r.get("system", "").startswith("hf+peft+bnb") and r.get("quant") == "nf4" and "samples_per_s" in r
    }
    for r in rows:
        if "model_tflop_per_step" in r and "step_s" in r and peak:
            r["mfu"] = round(r["model_tflop_per_step"] / r["step_s"] / peak, 3)
        if r.get("system") == "fastvla" and "samples_per_s" in r:
            ref_tokens = 280 if r["cameras"] == 1 else 536  # the baseline with the same cameras as prefix
            if (r["batch"], ref_tokens) in base:
                r["vs_baseline"] = round(r["samples_per_s"] / base[(r["batch"], ref_tokens)], 2)
                r["vs_baseline_row"] = f"base-train:q:{r['batch']}:{ref_tokens}"


def add_ddp(rows: list[dict[str, Any]]) -> None:
    """Scaling of each multi-GPU row against the 1-GPU row of the same per-GPU batch, and the largest loss
    difference against the 1-GPU row of the same global batch (the same samples)."""
    ddp = [r for r in rows if r.get("system") == "fastvla-ddp" and "samples_per_s" in r]
    for r in ddp:
        if r["gpus"] == 1:
            continue
        same_batch = next((o for o in ddp if o["gpus"] == 1 and o["batch"] == r["batch"]), None)
        if same_batch:
            r["scaling_vs_1gpu"] = round(r["samples_per_s"] / same_batch["samples_per_s"], 3)
        one = [o for o in ddp if o["gpus"] == 1]
        same_global = next((o for o in one if o["global_batch"] == r["global_batch"]), None)
        if same_global:
            n = min(len(r["losses"]), len(same_global["losses"]))
            diffs = [abs(a - b) for a, b in zip(r["losses"][:n], same_global["losses"][:n])]
            r["loss_max_abs_diff_vs_1gpu"] = round(max(diffs), 6)
            r["loss_max_rel_diff_vs_1gpu"] = round(
                max(d / max(abs(b), 1e-9) for d, b in zip(diffs, same_global["losses"])), 6
            )


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["", "## Training (one process per row)"]
    lines.append(f"{'row':36} {'samples/s':>9} {'step ms':>8} {'peak GiB':>8} {'MFU':>6} {'vs base':>7}")
    for r in rows:
        if "samples_per_s" in r:
            lines.append(
                f"{r['row']:36} {r['samples_per_s']:>9} {1000 * r['step_s']:>8.0f} {r['peak_gib']:>8} "
                f"{r.get('mfu', ''):>6} {r.get('vs_baseline', ''):>7}"
            )
    ddp = [r for r in rows if r.get("system") == "fastvla-ddp" and "samples_per_s" in r]
    if ddp:
        lines += ["", "## Data parallel (NCCL all-reduce between graphed forward/backward and AdamW)"]
        for r in ddp:
            extra = ""
            if "scaling_vs_1gpu" in r:
                extra += f" scaling {r['scaling_vs_1gpu']}x"
            if "loss_max_abs_diff_vs_1gpu" in r:
                extra += f" loss diff vs 1 GPU (same samples) max {r['loss_max_abs_diff_vs_1gpu']}"
            lines.append(
                f"{r['row']:30} {r['gpus']} GPU x batch {r['batch']}: {r['samples_per_s']} samples/s, "
                f"{1000 * r['step_s']:.0f} ms/update, peak {r['peak_gib']} GiB;{extra}"
            )
            lines.append(f"{'':30} losses {r['losses'][:6]}")
    lines += ["", "## Inference, batch 1"]
    for r in rows:
        if "forward_p50_ms" in r:
            lines.append(
                f"{r['row']:14} {r['quant']:5} forward p50 {r['forward_p50_ms']} ms "
                f"p99 {r['forward_p99_ms']} ms; "
                f"7-token decode {r['ar_7tok_ms']} ms ({r['actions_per_s_ar']} actions/s)"
            )
        if "eager_p50_ms" in r:
            graph = (
                f"graph p50 {r['graph_p50_ms']} p99 {r['graph_p99_ms']}" if "graph_p50_ms" in r else "graph -"
            )
            lines.append(
                f"{r['row']:20} {r['quant']:5} eager p50 {r['eager_p50_ms']} "
                f"p99 {r['eager_p99_ms']}; {graph} ms; "
                f"{r['actions_per_s']} actions/s (chunk 8)"
            )
    kern = [r for r in rows if r.get("row") == "kernels" and "eager_fwd_us" in r]
    if kern:
        lines += ["", "## Kernels (us, fwd | fwd+bwd)"]
        for r in kern:
            lines.append(
                f"{r['op']:26} eager {r['eager_fwd_us']}|{r['eager_fwdbwd_us']}  "
                f"compile {r['compile_fwd_us']}|{r['compile_fwdbwd_us']}  "
                f"triton {r['triton_fwd_us']}|{r['triton_fwdbwd_us']}  "
                f"({r['triton_fwd_gbps']} GB/s, err {r['max_rel_err']:.1e})"
            )
    for r in rows:
        if "fused_us" in r:
            lines.append(
                f"{r['op']:34} bnb {r['bnb_us']} us, fused {r['fused_us']} us "
                f"({r['fused_weight_gbps']} GB/s of packed weight), bf16 weight {r['bf16_us']} us, "
                f"err {r['max_rel_err']:.1e}"
            )
    for r in rows:
        prof = r.get("profile")
        if prof:
            lines.append(
                f"\nprofile {r['row']}: GPU busy {prof['gpu_busy_ms']} ms of {prof['profiled_step_ms']} ms"
            )
            cats = sorted(prof["categories_ms"].items(), key=lambda x: -x[1])
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in cats))
            lines.append("  top: " + "; ".join(f"{o['op'][:40]} {o['ms']}" for o in prof["top_ops"][:6]))
        if "error" in r:
            lines.append(f"ERROR {r['row']}: {r['error'][:300]}")
        if r.get("row") == "peak":
            lines.append(
                f"\npeak: {r['gpu']} bf16 matmul {r['bf16_matmul_tflops']} TFLOP/s, "
                f"copy {r['copy_gbps']} GB/s"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", choices=sorted(PLANS), help="a named list of rows")
    parser.add_argument(
        "--rows", default="", help="comma-separated row ids (see _gpu_rows.py), after --plan's"
    )
    parser.add_argument("--json", type=Path, help="output JSON path")
    parser.add_argument("--budget-s", type=float, default=540, help="skip rows that would end past this")
    parser.add_argument("--pytest", action="store_true", help="also run `pytest tests/kernels -m gpu`")
    parser.add_argument("--train-bench", action="store_true", help="also run benchmarks/train.py's GPU mode")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU: run it through the device tool")
    card = torch.cuda.get_device_name(0)
    plan = args.plan or ("" if args.rows else "fastvla")
    rows_wanted = [*PLANS.get(plan, []), *[r for r in args.rows.split(",") if r]]
    rows_wanted = list(dict.fromkeys(rows_wanted))  # keep order, drop repeats
    out_dir = Path(os.environ.get("OUT", HERE / "results"))
    slug = "h100" if "H100" in card else ("h200" if "H200" in card else card.split()[-1].lower())
    json_path = args.json or (
        out_dir / "gpu.json"
        if "OUT" in os.environ
        else HERE / "results" / f"gpu-{slug}-{dt.date.today()}.json"
    )
    log = out_dir / "gpu_rows.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    meta = {"gpu": card, "torch": torch.__version__, "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    for mod in ("transformers", "peft", "bitsandbytes", "triton"):
        try:
            meta[mod] = __import__(mod).__version__
        except Exception as err:
            meta[mod] = f"missing ({type(err).__name__})"
    results: list[dict[str, Any]] = []

    def save() -> None:
        add_derived(results)
        add_ddp(results)
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**meta, "rows": results}, indent=1))
        tmp.replace(json_path)

    steps = _with_checkpoints(rows_wanted)
    if args.pytest:
        steps.insert(1 if steps and steps[0] == "peak" else 0, "pytest-gpu")
    if args.train_bench:
        steps.append("train-bench")
    for step in steps:
        left = args.budget_s - (time.time() - start)
        est = COST.get(step.split(":")[0], 45)
        if left < est:
            results.append({"row": step, "skipped": f"budget: {left:.0f}s left, needs ~{est}s"})
            print(f"skip {step}: budget", flush=True)
            continue
        print(f"[{time.time() - start:5.0f}s] {step}", flush=True)
        if step == "pytest-gpu":
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "tests/kernels",
                "-m",
                "gpu",
                "-q",
                "-p",
                "no:cacheprovider",
            ]
            res: Any = run_command(step, cmd, min(left, 180), log)
        elif step == "train-bench":
            cmd = [sys.executable, str(HERE / "train.py"), "--preset", "openvla-7b-shape", "--load-in-4bit"]
            res = run_command(step, [*cmd, "--batch-sizes", "4,8,16"], min(left, 300), log)
        else:
            res = run_row(step, min(left, 300), log)
        new = res if isinstance(res, list) else [res]
        for r in new:
            print("   " + json.dumps(r)[:300], flush=True)
        results.extend(new)
        save()
    save()
    print(table(results))
    print(f"\nwrote {json_path} ({time.time() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
