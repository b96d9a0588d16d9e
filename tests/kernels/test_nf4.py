"""Fused NF4 dequantise-matmul against bitsandbytes' own dequantisation, and its inference-only patch."""

from types import SimpleNamespace

import bitsandbytes as bnb
import bitsandbytes.functional as F
import pytest
import torch

from fastvla.kernels import KernelConfig, apply_kernels
from fastvla.kernels import nf4 as K

from .conftest import rel_err


@pytest.fixture(autouse=True)
def _no_tuning(monkeypatch):
    """The CUDA cases run the default configuration (tuning compiles every candidate: slow for tests);
    ``test_tuned_on_gpu`` tunes one shape."""
    monkeypatch.setenv("FASTVLA_NF4_TUNE", "0")


def _quantized(n: int, k: int, nested: bool, device: torch.device):
    w = torch.randn(n, k, device=device)
    packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return packed, state, F.dequantize_4bit(packed, state).double()


def _dtypes(device: torch.device) -> list[torch.dtype]:
    # Triton's CPU interpreter computes bf16 dots wrongly (numpy has no bf16); bf16 is covered on CUDA.
    return [torch.float32, torch.float16] + ([torch.bfloat16] if device.type == "cuda" else [])


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("shape", [(5, 48, 192), (3, 40, 136), (1, 70, 640)])  # K=136: reference fallback
def test_matches_bitsandbytes_dequantize(device, shape, nested):
    torch.manual_seed(0)
    m, n, k = shape
    packed, state, w64 = _quantized(n, k, nested, device)
    assert rel_err(K.nf4_dequantize_reference(packed, state), w64) == 0.0
    bias = torch.randn(n, device=device)
    for dtype in _dtypes(device):
        x = torch.randn(m, k, device=device).to(dtype)
        with torch.no_grad():
            y = K.nf4_linear(x, packed, state, bias.to(dtype))
        assert y.dtype == dtype and y.shape == (m, n)
        tol = {
            torch.float32: 1e-5 if device.type == "cpu" else 2e-3,
            torch.float16: 2e-3,
            torch.bfloat16: 1.6e-2,
        }
        assert rel_err(y, x.double() @ w64.t() + bias.double()) < tol[dtype]


def test_split_k_accumulates_every_chunk(device):
    torch.manual_seed(1)
    packed, state, w64 = _quantized(64, 2048, True, device)  # one N block: K is split across programs
    x = torch.randn(4, 2048, device=device)
    with torch.no_grad():
        y = K.nf4_linear(x, packed, state)
    assert rel_err(y, x.double() @ w64.t()) < (1e-5 if device.type == "cpu" else 2e-3)


# Launch configurations that reach every branch: one K step of 1, 2 and 4 quantisation blocks, both column
# orders, a K split into several programs (float32 atomics, bias added once) and a single program per tile.
CONFIGS = [
    K.Nf4Config(block_n=32, block_kb=64, split_x=False, gather=True, num_stages=1, split=1),
    K.Nf4Config(block_n=16, block_kb=32, split_x=True, gather=False, num_stages=1, split=3),
    K.Nf4Config(block_n=64, block_kb=128, split_x=False, gather=False, num_stages=1, split=2),
    K.Nf4Config(block_n=32, block_kb=64, split_x=True, gather=True, num_stages=1, split=1),
    K.Nf4Config(block_n=16, block_kb=64, split_x=True, gather=True, num_stages=1, split=4),
    K.Nf4Config(block_n=16, block_kb=64, split_x=True, gather=True, num_stages=1, split=2, block_m=16),
]


@pytest.mark.parametrize(
    "cfg",
    CONFIGS,
    ids=lambda c: f"n{c.block_n}-kb{c.block_kb}-x{int(c.split_x)}-g{int(c.gather)}-s{c.split}-m{c.block_m}",
)
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("m", [1, 20])
def test_configs_match_reference(device, cfg, nested, m, monkeypatch):
    launched = []
    real_run = K._run
    monkeypatch.setattr(K, "_run", lambda *a: launched.append(a[-1]) or real_run(*a))
    # N = 72 is no multiple of any block_n; K = 704 = 11 quantisation blocks: several K steps with a
    # partial last one for block_kb 64 and 128, and splits of unequal length.
    torch.manual_seed(3)
    n, k = 72, 704
    packed, state, w64 = _quantized(n, k, nested, device)
    bias = torch.randn(n, device=device)
    for dtype in [torch.float32, torch.float16]:
        x = torch.randn(m, k, device=device).to(dtype)
        with torch.no_grad():
            y = K.nf4_linear(x, packed, state, bias.to(dtype), config=cfg)
        assert y.dtype == dtype and y.shape == (m, n)
        tol = 2e-3 if dtype == torch.float16 or device.type == "cuda" else 1e-5
        assert rel_err(y, x.double() @ w64.t() + bias.to(dtype).double()) < tol, (cfg, dtype)
    assert launched == [cfg, cfg]  # the kernel ran with the requested configuration, no fallback


def test_many_tokens_and_3d_input(device):
    torch.manual_seed(4)
    packed, state, w64 = _quantized(40, 256, False, device)
    x = torch.randn(2, 150, 256, device=device)  # 300 tokens > MAX_TOKENS: the reference path
    with torch.no_grad():
        y = K.nf4_linear(x, packed, state)
        y_small = K.nf4_linear(x[:, :60], packed, state)  # 120 tokens: the kernel, (B, T, K) input
    assert y.shape == (2, 150, 40) and y_small.shape == (2, 60, 40)
    tol = 1e-5 if device.type == "cpu" else 2e-3
    assert rel_err(y, x.double() @ w64.t()) < tol
    assert rel_err(y_small, x[:, :60].double() @ w64.t()) < tol


def test_auto_split_fills_the_gpu():
    cfg = K.Nf4Config(block_n=128, block_kb=64)
    # 88 tokens @ 4096 -> 4096 on 132 SMs: 32 tiles, 32 K steps -> ~8 splits of 4 steps
    assert K._auto_split(cfg, 88, 4096, 4096, 132) == 8
    # 11008 rows: 86 tiles already, so few splits; a tiny K never splits below 2 steps per program
    assert K._auto_split(cfg, 88, 11008, 4096, 132) == 3
    assert K._auto_split(cfg, 88, 4096, 128, 132) == 1
    # 176 tokens: one 256-token tile (block_m=256) halves the tiles of two 128-token ones
    big = K.Nf4Config(block_n=128, block_kb=64, block_m=256)
    assert K._auto_split(big, 176, 11008, 4096, 132) == 3 and K._auto_split(cfg, 176, 11008, 4096, 132) == 2
    assert [K._candidates(m) for m in (1, 32, 33, 128, 129, 256)] == [K._CANDIDATES[b] for b in
        ("small", "small", "mid", "mid", "large", "large")]  # fmt: skip
    with pytest.raises(ValueError, match="block_kb=48"):
        K.Nf4Config(block_kb=48)


def test_tuner_picks_the_fastest_and_survives_failures(monkeypatch):
    # The timing is faked (no GPU here): the tuner must return the cheapest candidate, then try its split
    # at 1 and 4 programs per SM, skip configurations that raise, prefer bitsandbytes where that is
    # faster, and fall back to it (with a warning) when no configuration runs.
    x2, packed, state = torch.randn(88, 4096), torch.zeros(1), SimpleNamespace(shape=(4096, 4096))
    monkeypatch.setattr(K, "_sm_count", lambda device: 132)
    fake = {"calls": [], "bnb_us": 100.0}

    def time_us(fn):
        fn()
        cfg = fake["calls"][-1]
        if cfg == "bnb":
            return fake["bnb_us"]
        if not cfg.gather:
            raise RuntimeError("out of resources")
        fastest = cfg.block_n == 64 and cfg.num_stages == 3  # one candidate; then more splits are faster
        return (1.0 if fastest else 10.0) + abs(cfg.split - 16) / 100

    monkeypatch.setattr(K, "_run", lambda x2, packed, state, bias, cfg: fake["calls"].append(cfg))
    monkeypatch.setattr(K, "_fallback", lambda *a: fake["calls"].append("bnb"))
    monkeypatch.setattr(K, "_time_us", time_us)
    best = K._tune(x2, packed, state, None)
    assert (best.block_n, best.num_stages, best.gather) == (64, 3, True)
    assert best.split == K._auto_split(best, 88, 4096, 4096, 132, 4.0) == 8  # the ×2 split won
    # the candidates (the winner at split 4), the winner at splits 2, 8 and 1, then bitsandbytes
    assert len(fake["calls"]) == len(K._CANDIDATES["mid"]) + 3 + 1

    fake["bnb_us"] = 0.5  # bitsandbytes faster than every configuration: use its path
    assert K._tune(x2, packed, state, None) is None

    monkeypatch.setattr(K, "_time_us", lambda fn: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.warns(RuntimeWarning, match="no kernel configuration ran"):
        assert K._tune(x2, packed, state, None) is None


@pytest.mark.gpu
def test_tuned_on_gpu(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run through the device tool)")
    monkeypatch.setenv("FASTVLA_NF4_TUNE", "1")
    torch.manual_seed(5)
    packed, state, w64 = _quantized(1000, 1024, True, torch.device("cuda"))
    x = torch.randn(88, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        y = K.nf4_linear(x, packed, state)
    key = (128, 1000, 1024, torch.bfloat16, True, x.device.index)  # 88 tokens: bucket 128
    assert key in K.tuned_configs() and (88, 1000, 1024, torch.bfloat16) in K.TUNE_TIMES
    assert rel_err(y, x.double() @ w64.t()) < 1.6e-2


@pytest.mark.gpu
@pytest.mark.parametrize("nested", [True, False])
def test_cuda_graph_capture(nested):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run through the device tool)")
    torch.manual_seed(6)
    cuda = torch.device("cuda")
    x = torch.randn(88, 512, device=cuda, dtype=torch.bfloat16)
    warm, warm_state, _ = _quantized(300, 512, nested, cuda)
    with torch.no_grad():
        K.nf4_linear(x, warm, warm_state)  # compiles the kernel outside the capture
    packed, state, w64 = _quantized(300, 512, nested, cuda)  # first seen inside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        y = K.nf4_linear(x, packed, state)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(y, x.double() @ w64.t()) < 1.6e-2
    with torch.no_grad():  # eager after the capture: nothing captured was cached
        assert rel_err(K.nf4_linear(x, packed, state), y) < 1e-2


def test_patch_routes_only_no_grad_calls(device, monkeypatch):
    torch.manual_seed(2)
    calls = []
    real = K.nf4_linear
    monkeypatch.setattr(K, "nf4_linear", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    layer = bnb.nn.Linear4bit(128, 64, bias=True, compute_dtype=torch.float32, quant_type="nf4").to(device)
    layer.support_avx512bf16_for_cpu = False  # keep bitsandbytes' own CPU path in the trainable layout
    x = torch.randn(3, 128, device=device)
    with torch.no_grad():
        expected = layer(x)
    model = torch.nn.Sequential(layer)
    with torch.no_grad():
        patch = apply_kernels(model, KernelConfig(nf4_inference=True))
        assert patch.counts["nf4"] == 1
        got = layer(x)
    assert calls == [1]  # the fused kernel ran
    assert rel_err(got, expected) < (1e-5 if device.type == "cpu" else 2e-3)
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()  # training calls go through bitsandbytes' autograd
    assert calls == [1]
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    patch.revert()
    assert "forward" not in layer.__dict__


def test_nf4_inference_is_opt_in():
    layer = bnb.nn.Linear4bit(64, 64, quant_type="nf4")
    assert apply_kernels(torch.nn.Sequential(layer)).counts["nf4"] == 0


def test_supported_shapes():
    _, state = F.quantize_4bit(torch.randn(8, 192), blocksize=64, quant_type="nf4")
    _, odd = F.quantize_4bit(torch.randn(8, 136), blocksize=64, quant_type="nf4")
    assert K.supported(state) and not K.supported(odd)


def test_rejects_other_quant_types():
    packed, state = F.quantize_4bit(torch.randn(8, 64), blocksize=64, quant_type="fp4")
    with pytest.raises(ValueError, match="quant_type='fp4'"):
        K.nf4_linear(torch.randn(2, 64), packed, state)
