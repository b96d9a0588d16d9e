"""CPU checks of the GPU benchmark's fairness: the recipe as the fixed reference builds it, one TF32 switch
for every row, ratios against the nearest recipe point, plans that measure both recipe points, and README
tables generated from a run's JSON."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved random Llama with the recipe's layout, small enough for CPU (widths multiples of 64)."""
    from transformers import LlamaForCausalLM

    from fastvla.model.presets import llama_config

    torch.manual_seed(0)
    cfg = llama_config(64, 128, 2, 4, vocab_size=256, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


def _recipe(path: str, checkpointing: bool, quant: bool = False):
    from _gpu_recipe import build_recipe_model

    dtype = torch.bfloat16 if quant else torch.float32
    return build_recipe_model(
        path, quant=quant, checkpointing=checkpointing, device_map={"": "cpu"}, dtype=dtype
    )


@pytest.mark.parametrize(("quant", "checkpointing"), [(False, True), (False, False), (True, True)])
def test_recipe_runs_in_train_mode_with_non_reentrant_checkpointing(
    tiny_llama: str, quant: bool, checkpointing: bool
) -> None:
    """The recipe as the fixed reference builds it (4-bit through prepare_model_for_kbit_training, or bf16
    LoRA): training mode, and non-reentrant checkpointing that really recomputes every layer."""
    from _gpu_common import checkpointing_state, count_recomputed_layers, decoder_layers
    from _gpu_recipe import recipe_step

    model = _recipe(tiny_llama, checkpointing, quant)
    assert all(m.training for m in model.modules())
    layers = decoder_layers(model)
    state = checkpointing_state(layers)
    assert state["layers"] == 2 and state["layers_in_train_mode"] == 2
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    step = recipe_step(model, opt, bsz=2, seq=12, dtype=torch.bfloat16 if quant else torch.float32)
    recomputed = count_recomputed_layers(layers, step)  # measured: the MLP runs again in the backward
    if checkpointing:
        assert state["layers_checkpointing_active"] == 2 and state["use_reentrant"] is False
        assert recomputed == 2
    else:
        assert state["layers_checkpointing_active"] == 0 and recomputed == 0


def test_the_old_recipe_bug_is_detected(tiny_llama: str) -> None:
    """Without train(), Hugging Face skips checkpointing: the labels must say so, not echo the request."""
    from _gpu_common import checkpointing_state, count_recomputed_layers, decoder_layers
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)  # eval mode
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert model.training  # the PEFT wrapper says "training": the first copy labelled its rows from this
    layers = decoder_layers(model)
    assert checkpointing_state(layers)["layers_checkpointing_active"] == 0
    emb = torch.randn(2, 12, 64)

    def fwd_bwd() -> None:
        model(inputs_embeds=emb, labels=torch.zeros(2, 12, dtype=torch.long)).loss.backward()

    assert count_recomputed_layers(layers, fwd_bwd) == 0


def test_every_row_gets_the_same_tf32_setting_from_one_function(monkeypatch: pytest.MonkeyPatch) -> None:
    import _gpu_rows

    seen: dict[str, bool] = {}

    def stub(kind: str):
        def run(row: str) -> dict:
            seen[kind] = torch.backends.cuda.matmul.allow_tf32
            return {"row": row}

        return run

    monkeypatch.setattr(_gpu_rows, "ROW_KINDS", {k: stub(k) for k in _gpu_rows.ROW_KINDS})
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for setting in ("0", "1"):
            monkeypatch.setenv("FASTVLA_BENCH_TF32", setting)
            for kind in _gpu_rows.ROW_KINDS:
                torch.backends.cuda.matmul.allow_tf32 = setting == "0"  # the opposite: main must set it
                result = _gpu_rows.main(f"{kind}:x")
                assert result["tf32"] is (setting == "1") and result["tf32_matmul"] is (setting == "1")
            assert set(seen.values()) == {setting == "1"}, seen
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_no_benchmark_file_sets_tf32_on_its_own() -> None:
    """Only ``_gpu_common.apply_tf32`` may touch the TF32 flags (the first copy set them for FastVLA only)."""
    offenders = [
        p.name
        for p in BENCH.glob("*.py")
        if p.name != "_gpu_common.py"
        and re.search(r"allow_tf32\s*=|set_float32_matmul_precision", p.read_text())
    ]
    assert not offenders


def _train_row(system: str, sps: float, peak: float, ckpt: int = 0, **kw) -> dict:
    row = {"row": f"{system}-{sps}", "system": system, "samples_per_s": sps, "peak_gib": peak, "batch": 8}
    row.update({"cameras": 1, "quant": "nf4", "layers_checkpointing_active": ckpt, **kw})
    return row


def test_ratio_is_taken_against_the_nearest_recipe_point() -> None:
    from _gpu_report import RECIPE, add_derived

    lean = _train_row(RECIPE, 16.15, 6.98, ckpt=32)
    fast = _train_row(RECIPE, 23.46, 26.54)
    other_cams = _train_row(RECIPE, 9.11, 8.73, ckpt=32, cameras=2)
    prefix = _train_row("fastvla", 46.2, 11.63)  # log-nearer 6.98 than 26.54
    big = _train_row("fastvla", 49.7, 20.0)  # nearer 26.54
    fp16 = _train_row("fastvla", 16.0, 8.8, quant="nf4/fp16")  # no fp16 recipe: no ratio
    rows = [lean, fast, other_cams, prefix, big, fp16]
    add_derived(rows)
    assert prefix["vs_recipe"]["point"] == "checkpointed"
    assert prefix["vs_recipe"]["speed_x"] == pytest.approx(46.2 / 16.15, abs=0.01)
    assert prefix["vs_recipe"]["memory_x"] == pytest.approx(11.63 / 6.98, abs=0.01)
    assert prefix["vs_recipe"]["dominates"] is False
    assert big["vs_recipe"]["point"] == "not checkpointed" and big["vs_recipe"]["dominates"] is True
    assert fp16["vs_recipe"] is None


def test_every_plan_measures_both_recipe_points_and_matching_cameras() -> None:
    import gpu

    for name, plan in gpu.PLANS.items():
        assert gpu.with_recipe_pairs(plan) == plan, f"plan {name} lacks a recipe point"
        recipe_cams = {r.split(":")[1] for r in plan if r.startswith("recipe-infer:")}
        fv_cams = {r.split(":")[2] for r in plan if r.startswith("fv-infer:")}
        assert not (recipe_cams and fv_cams) or recipe_cams == fv_cams, name
    fair = gpu.PLANS["fair"]
    for row in (r for r in fair if r.startswith("fv-train:")):
        cams, batch = row.split(":")[2], row.split(":")[3]
        for point in ("gc", "nogc"):
            assert f"recipe-train:q:{batch}:{cams}:{point}" in fair, row
    assert gpu.with_recipe_pairs(["recipe-train:q:8:1:gc+prof"])[-1] == "recipe-train:q:8:1:nogc"


def test_readme_renders_from_json_and_only_inside_the_markers(tmp_path: Path) -> None:
    from _gpu_report import BEGIN, END, RECIPE, render_into

    run = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "torch": "2.11",
        "rows": [
            {**_train_row(RECIPE, 16.15, 6.98, ckpt=32), "tokens": 280, "train_mode": True, "layers": 32}
            | {"layers_recomputed": 32, "use_reentrant": False, "tf32": True},
            {**_train_row(RECIPE, 23.46, 26.54), "tokens": 280, "train_mode": True, "layers": 32}
            | {"layers_recomputed": 0, "tf32": True},
            {**_train_row("fastvla", 46.2, 11.63), "fusion": "prefix", "tokens": 280, "mode": "cuda-graph"}
            | {"layers": 32, "layers_recomputed": 6, "use_reentrant": False, "tf32": True, "opts": ["k"]},
        ],
    }
    src = tmp_path / "gpu.json"
    src.write_text(json.dumps(run))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    assert render_into(src, [readme], source="gpu.json") == [readme]
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert "checkpointing 32/32 layers (measured, non-reentrant)" in text
    assert "checkpointing 6/32 layers (measured, non-reentrant)" in text
    assert "2.86× at 1.67× memory (vs checkpointed" in text
    assert "TF32 differs" not in text
    assert render_into(src, [readme], source="gpu.json") == []  # idempotent


def test_readme_gpu_tables_are_the_rendering_of_the_json_they_name() -> None:
    """Nobody edits the generated tables: re-rendering the named JSON reproduces them exactly."""
    from _gpu_report import BEGIN, END, render_markdown

    for doc in (REPO / "README.md", REPO / "docs" / "performance.md"):
        text = doc.read_text()
        section = text[text.index(BEGIN) + len(BEGIN) + 1 : text.index(END) - 1]
        source = re.match(r"Run `([^`]+)`", section).group(1)
        rendered = render_markdown(json.loads((REPO / source).read_text()), source)
        assert section == rendered, f"{doc.name}: run `python benchmarks/gpu.py --render-readme {source}`"


def test_legacy_runs_are_labelled_with_what_really_ran() -> None:
    from _gpu_report import render_markdown

    source = "benchmarks/results/gpu-h100x2-2026-11-26-final.json"
    text = render_markdown(json.loads((REPO / source).read_text()), source)
    assert "decoder in eval mode, checkpointing requested but skipped, TF32 off" in text
    assert "TF32 differs between the training rows" in text
    assert "Camera counts differ in the inference table" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.parametrize("opts", [set(), {"ao"}, {"fp16"}, {"oo"}, {"fp16", "oo", "ao"}])
def test_eager_training_row_step_runs_each_option_on_cpu(opts: set[str]) -> None:
    """The benchmark's eager step with activation offload, fp16 loss scaling and the CPU-offloaded AdamW
    (the GPU-only parts — capture, pinned memory — are not exercised here)."""
    import _gpu_rows
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))

        def forward(self, x: torch.Tensor, y: torch.Tensor):
            return type("Out", (), {"loss": (self.net(x).float() - y).square().mean()})()

    torch.manual_seed(0)
    model = Tiny()
    opt = _gpu_rows._fv_optimizer(list(model.parameters()), opts)
    dtype = torch.float16 if "fp16" in opts else torch.bfloat16
    static = {"x": torch.randn(16, 4), "y": torch.randn(16, 2)}
    losses: list[torch.Tensor] = []
    step, mode, scaler = _gpu_rows._train_step(model, opt, static, opts, dtype, lambda: dict(static), losses)
    for _ in range(5):
        step()
    assert mode == "eager" and (scaler is not None) == ("fp16" in opts)
    assert float(losses[-1]) < float(losses[0])


@pytest.mark.slow
def test_dry_run_on_cpu_runs_rows_end_to_end(tmp_path: Path) -> None:
    """``gpu.py --dry-run-cpu``: the row processes, JSON, labels and table on tiny shapes. fp16 through the
    trainer's update (G, not captured here) follows eager GradScaler exactly, offloaded AdamW too."""
    import os
    import subprocess

    fv = ("k+fp16", "k+fp16+G", "fp16+oo+G")
    rows = ",".join(["recipe-train:q:2:1:gc", *(f"fv-train:latent:2:2:{o}" for o in fv)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASTVLA_GPU_CKPT": str(tmp_path / "ckpt")}
    out = tmp_path / "run.json"
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--dry-run-cpu", "--rows", rows, "--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = {r["row"]: r for r in json.loads(out.read_text())["rows"] if "samples_per_s" in r}
    assert {"recipe-train:q:2:1:gc", "recipe-train:q:2:1:nogc"} <= done.keys()  # the pair was added
    assert done["recipe-train:q:2:1:gc"]["layers_recomputed"] == 2
    assert done["recipe-train:q:2:1:nogc"]["layers_recomputed"] == 0
    eager, graphed, offload = (done[f"fv-train:latent:2:2:{o}"] for o in fv)
    assert eager["last_loss"] == graphed["last_loss"] == offload["last_loss"]
    assert eager["loss_scale"] == graphed["loss_scale"] and offload["optimizer_state"] == "cpu"
    assert "checkpointing 2/2 layers (measured, non-reentrant)" in proc.stdout
