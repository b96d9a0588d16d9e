"""GPU benchmark: FastVLA vs the HF + PEFT + bitsandbytes QLoRA recipe, side by side in one run.

Every configuration runs in its own process (``benchmarks/_gpu_rows.py ROW``) so each peak-memory figure is
its own; random 7B checkpoints are written once per run to local disk and reused by every row. Every row
gets the same TF32 setting (``_gpu_common.apply_tf32``; ``FASTVLA_BENCH_TF32=0`` turns it off for all).

- The recipe (``_gpu_recipe.py``) in training mode with non-reentrant checkpointing, always at both points of
  its speed/memory curve: checkpointed (lean, slow) and not (fast, big), for 1 camera (280 tokens) and 2
  cameras (536 tokens) as prefix tokens; its inference with the same camera count as FastVLA's.
- FastVLA ``openvla-7b-shape`` in 4-bit + LoRA: prefix fusion with one camera (the recipe's 280 tokens) and
  cross-attention ("latent") fusion with two cameras; each compared with the nearest recipe point of the
  same run (``_gpu_report.nearest_recipe_point``), which is named next to the ratio.
- The 2xT4 budget emulated (``--plan t4``): fp16 + loss scaling under a 12 GiB allocator cap, eager and
  captured in CUDA graphs, with optimizer-state and activation CPU offload.

    python benchmarks/gpu.py                          # --plan fair: one device call (~8 min on an H100)
    python benchmarks/gpu.py --plan extras --continue-json $OUT/gpu.json   # same warm machine, same run
    python benchmarks/gpu.py --rows peak,kernels      # a subset; see _gpu_rows.py for the row ids
    python benchmarks/gpu.py --render-readme benchmarks/results/gpu-h100-DATE.json   # README + docs tables

Prints a table last and writes JSON (``--json``; default ``$OUT/gpu.json`` under the device tool, else
``benchmarks/results/gpu-<card>-<date>.json``). The device set-up is ``benchmarks/device_setup.sh``.
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

from _gpu_report import add_ddp, add_derived, render_into, table

HERE = Path(__file__).resolve().parent
ROWS = HERE / "_gpu_rows.py"
DDP_ROWS = HERE / "_gpu_ddp.py"

#: The recipe's two points (checkpointed, not) for 1 and 2 cameras as prefix tokens, batch 8, 4-bit.
RECIPE_TRAIN = [f"recipe-train:q:8:{cams}:{ckpt}" for cams in (1, 2) for ckpt in ("gc", "nogc")]
FAIR = [
    "peak",
    *RECIPE_TRAIN,
    "recipe-infer:2",
    "fv-train:prefix:1:8:k+mr+ll+g",
    "fv-train:prefix:1:8:k+mr+ll+gc6+g",
    "fv-train:latent:2:8:k+mr+ll+g",
    "fv-infer:latent:2:k",
]
#: More FastVLA rows for the run ``fair`` started (``--continue-json``: ratios need its recipe rows).
EXTRAS = [
    "fv-train:latent:2:8:g",
    "fv-train:latent:2:16:k+mr+ll+g",
    "fv-train:latent:2:8:k+mr+ll+fa+g",
    "fv-train:prefix:1:8:k+mr+ll+fa+g",
    "fv-train:prefix:1:8:k+mr+ll+gc6+oo+G",
]
#: The 2xT4 budget on one GPU: fp16 + loss scaling under a 12 GiB cap; eager vs graphed, offloads, batch 16.
T4 = [
    "peak",
    "fv-train:latent:2:8:k+fp16+mem12",
    "fv-train:latent:2:8:k+fp16+mem12+G",
    "fv-train:latent:2:8:k+fp16+mem12+oo+G",
    "fv-train:latent:2:8:k+fp16+mem12+ao",
    "fv-train:latent:2:16:k+fp16+mem12+G",
    "fv-train:latent:2:16:k+fp16+mem12+ao",
]
#: Data parallel (needs 2 GPUs): per-GPU batch 8 on 1 vs 2 GPUs (scaling), and global batch 16 on 1 GPU vs
#: 2 x 8 (the same samples: losses must agree update by update).
DDP = [
    "fv-ddp:1:latent:2:8:k+mr+ll+g",
    "fv-ddp:2:latent:2:8:k+mr+ll+g",
    "fv-ddp:1:latent:2:16:k+mr+ll+g",
]
PLANS = {
    "fair": FAIR,
    "extras": ["peak", *EXTRAS],
    "t4": T4,
    "baseline": ["peak", *RECIPE_TRAIN, "recipe-infer:1", "recipe-infer:2", "recipe-train:q:8:1:gc+prof"],
    "kernels": ["peak", "kernels"],
    "ddp": ["peak", *DDP],
}
#: Rough seconds per row kind, to skip rows that cannot finish inside --budget-s.
COST = {"peak": 15, "kernels": 90, "ckpt": 45, "recipe-train": 40, "recipe-infer": 75, "fv-infer": 100}


def with_recipe_pairs(rows: list[str]) -> list[str]:
    """``rows`` with the other point of every recipe training row added next to it: the recipe is a
    speed/memory curve, and a run never measures only one end of it."""
    out: list[str] = []
    for row in rows:
        out.append(row)
        if row.startswith("recipe-train:"):
            head, flags = row.rsplit(":", 1)
            other = "nogc" if "gc" in flags.split("+") else "gc"
            pair = f"{head}:{other}"
            if pair not in rows and pair not in out:
                out.append(pair)
    return list(dict.fromkeys(out))


def _with_checkpoints(rows: list[str]) -> list[str]:
    """``rows`` with each checkpoint-writing step inserted before the first row that reads it."""
    out: list[str] = []
    for row in rows:
        need = None
        if row.startswith("recipe-"):
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


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", choices=sorted(PLANS), help="a named list of rows (default: fair)")
    parser.add_argument(
        "--rows", default="", help="comma-separated row ids (see _gpu_rows.py), after --plan's"
    )
    parser.add_argument("--json", type=Path, help="output JSON path")
    parser.add_argument(
        "--continue-json",
        type=Path,
        help="add rows to this run's JSON (same machine, e.g. the next call on a warm one); rows it holds "
        "are not run again",
    )
    parser.add_argument("--budget-s", type=float, default=540, help="skip rows that would end past this")
    parser.add_argument(
        "--pytest", nargs="*", metavar="PATH", help="also run `pytest -m gpu PATH...` (default tests/kernels)"
    )
    parser.add_argument("--train-bench", action="store_true", help="also run benchmarks/train.py's GPU mode")
    parser.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="run the rows on the CPU with tiny shapes (no graphs, no Triton): plumbing, not speed",
    )
    parser.add_argument(
        "--render-readme",
        type=Path,
        metavar="JSON",
        help="no GPU needed: regenerate the GPU tables of README.md and docs/performance.md from a run's "
        "JSON",
    )
    return parser.parse_args()


def _load_run(path: Path, card: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metadata and rows of a run to continue; refuses another card's run (ratios stay within one)."""
    doc = json.loads(path.read_text())
    if doc.get("gpu") != card:
        raise SystemExit(f"--continue-json {path} was measured on {doc.get('gpu')!r}, this is {card!r}")
    meta = {k: v for k, v in doc.items() if k != "rows"}
    return meta, [r for r in doc.get("rows", []) if "skipped" not in r]


def _run_step(step: str, left: float, log: Path, pytest_paths: list[str]) -> Any:
    if step == "pytest-gpu":
        cmd = [sys.executable, "-m", "pytest", *pytest_paths, "-m", "gpu", "-q", "-p", "no:cacheprovider"]
        return run_command(step, cmd, min(left, 240), log)
    if step == "train-bench":
        cmd = [sys.executable, str(HERE / "train.py"), "--preset", "openvla-7b-shape", "--load-in-4bit"]
        return run_command(step, [*cmd, "--batch-sizes", "4,8,16"], min(left, 300), log)
    return run_row(step, min(left, 300), log)


def main() -> int:
    args = _parse()
    if args.render_readme:
        root = HERE.parent
        changed = render_into(args.render_readme, [root / "README.md", root / "docs" / "performance.md"])
        print(
            "rendered into " + (", ".join(str(c.relative_to(root)) for c in changed) or "nothing (unchanged)")
        )
        return 0
    import torch

    if args.dry_run_cpu:
        os.environ["FASTVLA_BENCH_DEVICE"] = "cpu"  # read by the row processes (_gpu_common.DEVICE)
    elif not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/gpu.py needs a CUDA GPU (run it through the device tool), or --dry-run-cpu"
        )
    card = "cpu (dry run, tiny shapes)" if args.dry_run_cpu else torch.cuda.get_device_name(0)
    plan = args.plan or ("" if args.rows else "fair")
    rows_wanted = with_recipe_pairs([*PLANS.get(plan, []), *[r for r in args.rows.split(",") if r]])
    if args.dry_run_cpu:  # GPU-only rows: the matmul peak, Triton kernels, NCCL
        rows_wanted = [r for r in rows_wanted if r.split(":")[0] not in ("peak", "kernels", "nf4", "fv-ddp")]
    out_dir = Path(os.environ.get("OUT", HERE / "results"))
    slug = "h100" if "H100" in card else ("h200" if "H200" in card else card.split()[-1].lower())
    default = (
        out_dir / "gpu.json"
        if "OUT" in os.environ
        else HERE / "results" / f"gpu-{slug}-{dt.date.today()}.json"
    )
    if args.dry_run_cpu:
        out_dir = Path(os.environ.get("OUT", "/tmp/fastvla-gpu-dry-run"))
        default = out_dir / "gpu-dry-run.json"
    json_path = args.json or args.continue_json or default
    log = out_dir / "gpu_rows.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    meta: dict[str, Any] = {"gpu": card, "torch": torch.__version__}
    meta["started"] = dt.datetime.now(dt.timezone.utc).isoformat()
    for mod in ("transformers", "peft", "bitsandbytes", "triton"):
        try:
            meta[mod] = __import__(mod).__version__
        except Exception as err:
            meta[mod] = f"missing ({type(err).__name__})"
    results: list[dict[str, Any]] = []
    if args.continue_json:
        meta, results = _load_run(args.continue_json, card)
        meta.setdefault("calls", 1)
        meta["calls"] += 1
    done = {r.get("row") for r in results if "error" not in r}

    def save() -> None:
        add_derived(results)
        add_ddp(results)
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**meta, "rows": results}, indent=1))
        tmp.replace(json_path)

    steps = [s for s in _with_checkpoints(rows_wanted) if s not in done or s.startswith("ckpt:")]
    if args.pytest is not None:
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
        res = _run_step(step, left, log, args.pytest or ["tests/kernels"])
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
