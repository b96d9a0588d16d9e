"""``swiglu_down``: same outputs and gradients as the unfused MLP, without saving the SwiGLU output."""

import peft
import pytest
import torch
from torch import nn

from fastvla.kernels import (
    KernelConfig,
    kernels_enabled,
    swiglu_down,
    swiglu_down_fallback_reason,
    swiglu_reference,
)

from ._lora_helpers import counting_saved, fwd_bwd, peft_tiny_llama, randomize_lora_b, to_4bit
from .conftest import rel_err

D, INTER, TOKENS = 64, 128, (2, 8)  # widths multiples of 64: bitsandbytes' CPU kernels need it
# Output agreement with PEFT's unfused ops: the epilogue rounds once where PEFT rounds three times, so bf16
# outputs differ by one or two bf16 roundings (measured 2e-3 relative); a wrong scale is off by ~10%.
OUT_TOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3}


class GatedMLP(nn.Module):
    """A Llama-style MLP (what ``apply_kernels`` recognises): ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(D, INTER, bias=False)
        self.up_proj = nn.Linear(D, INTER, bias=False)
        self.down_proj = nn.Linear(INTER, D, bias=bias)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _model(
    base: str = "linear",
    lora: bool = True,
    bias: bool = False,
    compute: torch.dtype = torch.float32,
    device: str = "cpu",
    **lora_kw,
) -> nn.Module:
    torch.manual_seed(0)
    mlp = GatedMLP(bias=bias)
    if base == "nf4":
        mlp.down_proj = to_4bit(mlp.down_proj, compute, device)
    mlp.to(device)
    mlp.requires_grad_(False)
    if not lora:
        return mlp
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["gate_proj", "up_proj", "down_proj"],
        **{"lora_dropout": 0.0, **lora_kw},
    )
    model = peft.get_peft_model(mlp, config)
    return randomize_lora_b(model)


def _mlp(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _run(model: nn.Module, x: torch.Tensor, recompute: bool, autocast: bool):
    """Output, gradients (inputs + trainable parameters) and saved-activation bytes of one fwd+bwd."""
    y, grads, activation_bytes, patch = fwd_bwd(model, x, KernelConfig(mlp_recompute=recompute), autocast)
    assert patch.counts["swiglu"] == 1 and patch.counts["mlp_recompute"] == int(recompute)
    return y.detach(), grads, activation_bytes


CASES = [
    pytest.param("linear", False, torch.float32, id="lora-linear-fp32"),
    pytest.param("linear", True, torch.float32, id="lora-linear-autocast-bf16"),
    pytest.param("nf4", False, torch.float32, id="lora-nf4-fp32"),
    pytest.param("nf4", True, torch.bfloat16, id="lora-nf4-autocast-bf16"),
]


@pytest.mark.parametrize("base,autocast,compute", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_unfused_path(base, autocast, compute, bias):
    model = _model(base, bias=bias, compute=compute)
    assert swiglu_down_fallback_reason(_mlp(model).down_proj) is None
    x = torch.randn(*TOKENS, D)
    y_ref, g_ref, bytes_ref = _run(model, x, recompute=False, autocast=autocast)
    y, g, nbytes = _run(model, x, recompute=True, autocast=autocast)
    # the adapter's scale and add run in the GEMM epilogue: one rounding instead of PEFT's three
    assert y.dtype == y_ref.dtype and rel_err(y, y_ref) < OUT_TOL[y.dtype], rel_err(y, y_ref)
    assert g.keys() == g_ref.keys() and len(g) == 7  # x + A, B of three adapters
    tol = 1e-6 if not autocast else 1e-2
    for name in g_ref:
        assert g[name].dtype == g_ref[name].dtype, name
        assert rel_err(g[name], g_ref[name]) < tol, (name, rel_err(g[name], g_ref[name]))
    # h = silu(g) * u is not kept: at least its size fewer saved bytes (h is bf16 under autocast)
    h_bytes = TOKENS[0] * TOKENS[1] * INTER * (2 if autocast else 4)
    assert bytes_ref - nbytes >= h_bytes, (bytes_ref, nbytes, h_bytes)


@pytest.mark.gpu
@pytest.mark.parametrize("base,autocast,compute", CASES)
def test_matches_unfused_path_on_cuda(base, autocast, compute):
    """The same comparison with compiled Triton kernels and bitsandbytes' CUDA NF4 (device tool)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run through the device tool)")
    model = _model(base, compute=compute, device="cuda")
    x = torch.randn(*TOKENS, D, device="cuda")
    y_ref, g_ref, bytes_ref = _run(model, x, recompute=False, autocast=autocast)
    y, g, nbytes = _run(model, x, recompute=True, autocast=autocast)
    assert rel_err(y, y_ref) < OUT_TOL[y.dtype] and g.keys() == g_ref.keys()  # epilogue rounding only
    tol = 1e-5 if not autocast else 1e-2
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < tol, (name, rel_err(g[name], g_ref[name]))
    assert bytes_ref - nbytes >= TOKENS[0] * TOKENS[1] * INTER * (2 if autocast else 4)


def test_frozen_base_without_adapter():
    model = _model("linear", lora=False, bias=True)
    assert swiglu_down_fallback_reason(model.down_proj) is None
    x = torch.randn(*TOKENS, D)
    y_ref, g_ref, _ = _run(model, x, recompute=False, autocast=False)
    y, g, _ = _run(model, x, recompute=True, autocast=False)
    assert torch.equal(y, y_ref) and list(g) == ["x"]
    assert rel_err(g["x"], g_ref["x"]) < 1e-6


def test_direct_call_and_inference_path():
    model = _model("nf4")
    down = _mlp(model).down_proj
    gate = torch.randn(*TOKENS, INTER, requires_grad=True)
    up = torch.randn(*TOKENS, INTER, requires_grad=True)
    y = swiglu_down(gate, up, down)
    assert y.grad_fn is not None and "SwiGLUDown" in type(y.grad_fn).__name__
    with torch.no_grad():  # nothing to save: the plain module call
        assert rel_err(swiglu_down(gate, up, down), y.detach()) < OUT_TOL[y.dtype]
    with pytest.raises(ValueError, match="must match in shape and dtype"):
        swiglu_down(gate, up.double(), down)


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda m: _model("linear", lora_dropout=0.1), "dropout"),
        (lambda m: m.merge_adapter() or m, "merged"),
        (lambda m: _two_adapters(m), "2 active"),
        (lambda m: _model("linear", use_dora=True), "variant"),
        (lambda m: m.requires_grad_(True) and _model("linear", lora=False).requires_grad_(True), "trainable"),
    ],
    ids=["dropout", "merged", "two-adapters", "dora", "trainable-base"],
)
def test_unsupported_layers_fall_back(change, reason):
    model = change(_model("linear"))
    down = _mlp(model).down_proj
    assert reason in swiglu_down_fallback_reason(down)
    gate = torch.randn(*TOKENS, INTER, requires_grad=True)
    y = swiglu_down(gate, torch.randn(*TOKENS, INTER), down)
    assert "SwiGLUDown" not in type(y.grad_fn).__name__  # the module's own autograd graph


def _two_adapters(model: nn.Module) -> nn.Module:
    model.add_adapter("other", peft.LoraConfig(r=4, target_modules=["down_proj"], lora_dropout=0.0))
    model.base_model.set_adapter(["default", "other"])
    return model


def test_dropout_in_eval_mode_is_supported():
    model = _model("linear", lora_dropout=0.1)
    model.eval()
    assert swiglu_down_fallback_reason(_mlp(model).down_proj) is None


def _down_layer(device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A PEFT LoRA layer (r=4, s=2) over a frozen biased nn.Linear, built through PEFT's public API."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(INTER, D)).requires_grad_(False)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["0"])
    layer = peft.get_peft_model(net, config).base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.2)
    return layer.to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_path_matches_float64_oracle(device, dtype):
    """Triton SwiGLU kernels (interpreted on CPU, compiled on CUDA) inside the recomputing Function.

    The bound is relative to the device's own matmul accuracy: the fused path's error against a float64
    oracle may be at most twice that of PEFT's unfused path (plain PyTorch ops, same device and dtype) plus
    a floor of about one rounding, and never above a ceiling. On CUDA, fp32 matmuls may run in TF32
    (``allow_tf32``, ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE``) and bf16 GEMMs may reduce split-K partial sums in
    bf16, which a fixed fp32 bound of 1e-5 cannot absorb; a wrong factor (0.5 on a term) is off by 10-50%,
    far above both bounds.
    """
    layer = _down_layer(device, dtype)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    gate = torch.randn(*TOKENS, INTER, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(*TOKENS, INTER, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(*TOKENS, D, device=device, dtype=dtype)
    leaves = (gate, up, a, b)
    y = swiglu_down(gate, up, layer)
    assert "SwiGLUDown" in type(y.grad_fn).__name__
    got = (y, *torch.autograd.grad(y, leaves, dy))
    y_ref = layer(swiglu_reference(gate, up))  # PEFT's unfused ops, float32 SwiGLU math like the kernel
    ref = (y_ref, *torch.autograd.grad(y_ref, leaves, dy))

    l64 = [t.detach().double().requires_grad_(True) for t in leaves]
    g64, u64, a64, b64 = l64
    h = torch.nn.functional.silu(g64) * u64
    base = layer.base_layer
    y64 = h @ base.weight.double().t() + base.bias.double() + 2.0 * (h @ a64.t()) @ b64.t()  # alpha / r = 2
    oracle = (y64, *torch.autograd.grad(y64, l64, dy.double()))

    floor, ceiling = {torch.float32: (1e-6, 5e-3), torch.bfloat16: (4e-3, 3e-2)}[dtype]
    for name, g, r, o in zip(("y", "dgate", "dup", "dA", "dB"), got, ref, oracle):
        err, err_peft = rel_err(g, o), rel_err(r, o)
        assert g.dtype == dtype, (name, g.dtype)
        assert err < min(2 * err_peft + floor, ceiling), (name, err, err_peft)


def test_llama_with_lora_through_apply_kernels():
    """End to end through a PEFT-wrapped Llama: each layer's MLP saves one ``h`` less, same gradients."""
    model = peft_tiny_llama(D, INTER)
    ids = torch.randint(0, 100, TOKENS)
    results = []
    for recompute in (False, True):
        model.zero_grad(set_to_none=True)
        saved: dict[int, int] = {}
        with kernels_enabled(model, KernelConfig(mlp_recompute=recompute)) as patch:
            assert patch.counts["swiglu"] == 2 and patch.counts["mlp_recompute"] == 2 * recompute
            with counting_saved(saved):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), sum(saved.values()), grads))
    (loss_ref, bytes_ref, g_ref), (loss, nbytes, g) = results
    assert rel_err(loss, loss_ref) < 1e-6 and len(g) == 2 * 7 * 2  # 2 layers x 7 linears x (A, B)
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-5, name
    assert bytes_ref - nbytes >= 2 * TOKENS[0] * TOKENS[1] * INTER * 4  # one fp32 h per layer


def test_instance_forwards_other_than_ours_fall_back():
    model = _model("nf4")
    down = _mlp(model).down_proj
    with kernels_enabled(model, KernelConfig(nf4_inference=True)) as patch:
        assert patch.counts["nf4"] == 1 and patch.counts["mlp_recompute"] == 1  # our own nf4 forward is fine
        assert swiglu_down_fallback_reason(down) is None
    base = down.get_base_layer()
    base.forward = lambda x: type(base).forward(base, x)  # as accelerate's device hooks do
    assert "replaced forward" in swiglu_down_fallback_reason(down)
    with kernels_enabled(model) as patch:
        assert patch.counts["swiglu"] == 1 and patch.counts["mlp_recompute"] == 0
