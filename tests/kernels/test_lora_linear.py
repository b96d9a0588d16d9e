"""``lora_linear``: PEFT's LoRA layer with the adapter's scale and add in the GEMM epilogue.

Compared with PEFT's own (unfused) forward and backward on the same layer: outputs to rounding, gradients of
``x``, ``A`` and ``B`` in the same dtypes and to rounding, and never more saved activation bytes.
"""

import peft
import pytest
import torch
from torch import nn

from fastvla.kernels import KernelConfig, kernels_enabled
from fastvla.kernels.lora_linear import lora_linear, lora_linear_fallback_reason

from ._lora_helpers import counting_saved, fwd_bwd, peft_tiny_llama, randomize_lora_b, to_4bit
from .conftest import rel_err

D_IN, D_OUT, TOKENS = 128, 64, (2, 8)  # widths multiples of 64: bitsandbytes' CPU kernels need it
# The epilogue rounds once where PEFT rounds after the GEMM, the multiply and the add (and dx is summed in
# one GEMM instead of two roundings and an add): at most about two roundings of the dtype per element
# (measured on CPU: bf16 2.4e-3, fp32 0). A wrong scale, a missing term or a transposed operand is off by
# 10-100%. dA and dB come from the very same matmuls as PEFT's (s = 2 is exact): equal to 1e-6 on CPU.
TOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3}
FUSED = "LoraLinearFunction"


class Net(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.proj = nn.Linear(D_IN, D_OUT, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _model(
    base: str = "linear",
    bias: bool = False,
    compute: torch.dtype = torch.float32,
    weights: torch.dtype = torch.float32,
    device: str = "cpu",
    **lora_kw,
) -> nn.Module:
    torch.manual_seed(0)
    net = Net(bias)
    if base == "nf4":
        net.proj = to_4bit(net.proj, compute, device)
    net.to(device)
    if base == "linear":
        net.to(weights)
    net.requires_grad_(False)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["proj"], **{"lora_dropout": 0.0, **lora_kw})
    model = peft.get_peft_model(net, config)  # adapters in fp32 (PEFT's autocast_adapter_dtype)
    return randomize_lora_b(model)


def _layer(model: nn.Module) -> nn.Module:
    return model.base_model.model.proj


def _run(model: nn.Module, x: torch.Tensor, fused: bool, autocast: bool):
    """Output, gradients (x + trainable parameters), saved activation bytes and the output's grad_fn name."""
    y, grads, activation_bytes, patch = fwd_bwd(model, x, KernelConfig(lora_linear=fused), autocast)
    assert patch.counts["lora_linear"] == int(fused)
    return y.detach(), grads, activation_bytes, type(y.grad_fn).__name__


def _compare(model: nn.Module, x: torch.Tensor, autocast: bool, exact_lora_grads: bool = True) -> None:
    y_ref, g_ref, bytes_ref, fn_ref = _run(model, x, fused=False, autocast=autocast)
    y, g, nbytes, fn = _run(model, x, fused=True, autocast=autocast)
    assert FUSED in fn and FUSED not in fn_ref
    assert y.dtype == y_ref.dtype and rel_err(y, y_ref) < TOL[y.dtype], rel_err(y, y_ref)
    assert g.keys() == g_ref.keys() and len(g) == 3  # x, A, B
    for name in g_ref:
        assert g[name].dtype == g_ref[name].dtype, (name, g[name].dtype, g_ref[name].dtype)
        # dA, dB: the same matmuls in the same dtype; dx: rounding of the input's dtype
        tol = TOL[x.dtype if not autocast else torch.bfloat16]
        if name != "x" and exact_lora_grads:
            tol = 1e-6
        assert rel_err(g[name], g_ref[name]) < tol, (name, rel_err(g[name], g_ref[name]))
    assert nbytes <= bytes_ref, (nbytes, bytes_ref)  # never saves more than PEFT's path


CASES = [
    pytest.param("linear", False, torch.float32, torch.float32, id="linear-fp32"),
    pytest.param("linear", True, torch.float32, torch.float32, id="linear-fp32-weights-autocast-bf16"),
    pytest.param("linear", True, torch.float32, torch.bfloat16, id="linear-bf16-weights-autocast-bf16"),
    pytest.param("linear", False, torch.float32, torch.bfloat16, id="linear-bf16-weights-fp32-adapter"),
    pytest.param("nf4", False, torch.float32, torch.float32, id="nf4-fp32"),
    pytest.param("nf4", True, torch.bfloat16, torch.float32, id="nf4-autocast-bf16"),
    pytest.param("nf4", False, torch.bfloat16, torch.bfloat16, id="nf4-bf16-input-fp32-adapter"),
]


@pytest.mark.parametrize("base,autocast,compute,weights", CASES)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_matches_peft(base, autocast, compute, weights, bias):
    model = _model(base, bias=bias, compute=compute, weights=weights)
    assert lora_linear_fallback_reason(_layer(model)) is None
    x = torch.randn(*TOKENS, D_IN, dtype=weights if base == "linear" else compute)
    _compare(model, x, autocast)


def test_lora_grads_are_fp32_under_autocast():
    model = _model("nf4", compute=torch.bfloat16)
    _, g, _, _ = _run(model, torch.randn(*TOKENS, D_IN), fused=True, autocast=True)
    assert all(v.dtype == torch.float32 for k, v in g.items() if "lora" in k)
    assert g["x"].dtype == torch.float32  # back through autocast's cast of the fp32 input


def test_saves_less_than_peft_under_autocast():
    """PEFT keeps two bf16 copies of an fp32 input (base and lora_A casts) and the bf16 A/B/W casts."""
    model = _model("linear")
    x = torch.randn(*TOKENS, D_IN)
    _, _, bytes_ref, _ = _run(model, x, fused=False, autocast=True)
    _, _, nbytes, _ = _run(model, x, fused=True, autocast=True)
    x_bf16, t_bf16 = x.numel() * 2, TOKENS[0] * TOKENS[1] * 4 * 2
    assert nbytes == x_bf16 + t_bf16  # exactly x in the adapter's matmul dtype and t
    assert bytes_ref - nbytes >= x_bf16  # at least the second copy of x fewer


def test_no_grad_runs_peft_forward():
    model = _model("nf4")
    layer = _layer(model)
    x = torch.randn(*TOKENS, D_IN)
    with torch.no_grad():
        assert torch.equal(lora_linear(x, layer), type(layer).forward(layer, x))
    y = lora_linear(x.requires_grad_(True), layer)
    assert FUSED in type(y.grad_fn).__name__


def _two_adapters(model: nn.Module) -> nn.Module:
    model.add_adapter("other", peft.LoraConfig(r=4, target_modules=["proj"], lora_dropout=0.0))
    model.base_model.set_adapter(["default", "other"])
    return model


def _trainable_base(model: nn.Module) -> nn.Module:
    _layer(model).base_layer.weight.requires_grad_(True)
    return model


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: _model(lora_dropout=0.1), "dropout"),
        (lambda: _model_merged(), "merged"),
        (lambda: _two_adapters(_model()), "2 active"),
        (lambda: _model(use_dora=True), "variant"),
        (lambda: _trainable_base(_model()), "trainable"),
        (lambda: _model(lora_bias=True), "LoRA bias"),
    ],
    ids=["dropout", "merged", "two-adapters", "dora", "trainable-base", "lora-bias"],
)
def test_unsupported_layers_run_peft_forward(make, reason):
    model = make()
    layer = _layer(model)
    assert reason in lora_linear_fallback_reason(layer)
    x = torch.randn(*TOKENS, D_IN, requires_grad=True)
    torch.manual_seed(1)  # the same dropout mask in both calls
    y_ref = model(x)
    with kernels_enabled(model, KernelConfig(lora_linear=True)) as patch:
        assert patch.counts["lora_linear"] == 0 and "forward" in layer.__dict__  # swapped, decides per call
        torch.manual_seed(1)
        y = model(x)
    assert FUSED not in type(y.grad_fn).__name__ and torch.equal(y, y_ref)
    assert "forward" not in layer.__dict__  # reverted


def _model_merged() -> nn.Module:
    model = _model()
    model.merge_adapter()
    return model


def test_decides_per_call_after_patching():
    model = _model(lora_dropout=0.1)
    layer = _layer(model)
    x = torch.randn(*TOKENS, D_IN, requires_grad=True)
    with kernels_enabled(model) as patch:
        assert patch.counts["lora_linear"] == 0
        assert FUSED not in type(model(x).grad_fn).__name__  # dropout active in train mode
        model.eval()  # dropout off: now supported
        assert lora_linear_fallback_reason(layer) is None
        assert FUSED in type(model(x).grad_fn).__name__
        model.merge_adapter()  # merged: PEFT's forward again
        assert FUSED not in type(model(x).grad_fn).__name__


def test_llama_with_lora_through_apply_kernels():
    """A PEFT-wrapped tiny Llama: same loss and LoRA gradients with and without the fused linears."""
    model = peft_tiny_llama()
    ids = torch.randint(0, 100, TOKENS)
    results = {}
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        saved: dict[int, int] = {}
        with kernels_enabled(model, KernelConfig(lora_linear=fused)) as patch:
            assert patch.counts["lora_linear"] == 2 * 7 * fused  # q k v o gate up down per layer
            with counting_saved(saved):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results[fused] = (loss.detach(), sum(saved.values()), grads)
    (loss_ref, bytes_ref, g_ref), (loss, nbytes, g) = results[False], results[True]
    assert rel_err(loss, loss_ref) < 1e-6 and len(g) == 2 * 7 * 2  # 2 layers x 7 linears x (A, B)
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-5, name
    assert nbytes <= bytes_ref
    assert all("forward" not in m.__dict__ for m in model.modules())  # reverted


# -------------------------------------------------------------------------------------------------- GPU


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run through the device tool)")


@pytest.mark.gpu
@pytest.mark.parametrize("base,autocast,compute,weights", CASES)
def test_matches_peft_on_cuda(base, autocast, compute, weights):
    """cuBLAS epilogue and bitsandbytes' CUDA NF4, against PEFT on the same card (TF32 off: fp32 exact)."""
    _cuda()
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        model = _model(base, bias=True, compute=compute, weights=weights, device="cuda")
        x = torch.randn(*TOKENS, D_IN, device="cuda", dtype=weights if base == "linear" else compute)
        _compare(model, x, autocast, exact_lora_grads=False)  # cuBLAS may pick other algorithms
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.gpu
def test_cuda_graph_capture():
    """Forward + backward captured in one CUDA graph and replayed: same gradients as eager (no host syncs)."""
    _cuda()
    model = _model("nf4", compute=torch.bfloat16, device="cuda")
    layer = _layer(model)
    x = torch.randn(*TOKENS, D_IN, device="cuda", requires_grad=True)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        for p in (*params, x):
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):  # graphs: no cast cache
            y = lora_linear(x, layer)
        assert FUSED in type(y.grad_fn).__name__
        y.float().square().sum().backward()

    step()
    eager = [g.grad.clone() for g in (*params, x)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs recommends
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for p in (*params, x):
        p.grad = torch.zeros_like(p)
    with torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):  # graphs: no cast cache
            y = lora_linear(x, layer)
        y.float().square().sum().backward()
    graph.replay()
    torch.cuda.synchronize()
    for got, ref in zip([g.grad for g in (*params, x)], eager):
        assert rel_err(got, ref) < 1e-3  # same kernels; a stale or unsynchronised buffer is off by O(1)
