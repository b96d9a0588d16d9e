"""``swiglu_down``: same outputs and gradients as the unfused MLP, without saving the SwiGLU output."""

import contextlib

import pytest
import torch
from torch import nn

from fastvla.kernels import KernelConfig, kernels_enabled, swiglu_down, swiglu_down_fallback_reason

from .conftest import rel_err

peft = pytest.importorskip("peft")

D, INTER, TOKENS = 64, 128, (2, 8)  # widths multiples of 64: bitsandbytes' CPU kernels need it


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


def _to_4bit(linear: nn.Linear, compute_dtype: torch.dtype, device: str = "cpu") -> nn.Module:
    bnb = pytest.importorskip("bitsandbytes")
    from fastvla.model import guard_cpu_4bit

    q = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        quant_type="nf4",
    )
    q.load_state_dict(linear.state_dict())
    q = q.to(device)  # quantises
    guard_cpu_4bit(q)
    return q


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
        mlp.down_proj = _to_4bit(mlp.down_proj, compute, device)
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
    with torch.no_grad():  # PEFT starts B at zero, which would hide a wrong dA
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return model


def _mlp(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _counting_saved(saved: dict[int, int]) -> torch.autograd.graph.saved_tensors_hooks:
    """Record every tensor autograd saves as storage address -> bytes (a tensor saved twice counts once)."""

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def _run(model: nn.Module, x: torch.Tensor, recompute: bool, autocast: bool):
    """Output, gradients (inputs + trainable parameters) and saved-activation bytes of one fwd+bwd."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    saved: dict[int, int] = {}

    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with kernels_enabled(model, KernelConfig(mlp_recompute=recompute)) as patch:
        assert patch.counts["swiglu"] == 1 and patch.counts["mlp_recompute"] == int(recompute)
        with ctx, _counting_saved(saved):
            y = model(x)
        (y.float() * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum().backward()
    grads = {"x": x.grad} | {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    activation_bytes = sum(b for ptr, b in saved.items() if ptr not in param_ptrs)
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
    assert y.dtype == y_ref.dtype and torch.equal(y, y_ref)  # same ops, same bits
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
    assert rel_err(y, y_ref) < 1e-6 and g.keys() == g_ref.keys()  # same kernels: expected bit-equal
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
        assert torch.equal(swiglu_down(gate, up, down), y.detach())
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_path_matches_float64_oracle(device, dtype):
    """Triton SwiGLU kernels (interpreted on CPU, compiled on CUDA) inside the recomputing Function."""
    torch.manual_seed(1)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0)
    base = nn.Linear(INTER, D).requires_grad_(False)
    layer = peft.tuners.lora.Linear(base, "default", config=config, r=4, lora_alpha=8)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.2)
    layer = layer.to(device=device, dtype=dtype)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    gate = torch.randn(*TOKENS, INTER, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(*TOKENS, INTER, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(*TOKENS, D, device=device, dtype=dtype)
    y = swiglu_down(gate, up, layer)
    assert "SwiGLUDown" in type(y.grad_fn).__name__
    grads = torch.autograd.grad(y, (gate, up, a, b), dy)
    leaves = [t.detach().double().requires_grad_(True) for t in (gate, up, a, b)]
    g64, u64, a64, b64 = leaves
    h = torch.nn.functional.silu(g64) * u64
    base = layer.base_layer
    y64 = h @ base.weight.double().t() + base.bias.double() + 2.0 * (h @ a64.t()) @ b64.t()  # alpha / r = 2
    refs = torch.autograd.grad(y64, leaves, dy.double())
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    assert rel_err(y, y64) < tol
    for got, ref in zip(grads, refs):
        assert got.dtype == dtype and rel_err(got, ref) < tol


def test_llama_with_lora_through_apply_kernels():
    """End to end through a PEFT-wrapped Llama: each layer's MLP saves one ``h`` less, same gradients."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=D,
        intermediate_size=INTER,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=100,
        attn_implementation="sdpa",
    )
    llama = transformers.LlamaForCausalLM(cfg).requires_grad_(False)
    model = peft.get_peft_model(llama, peft.LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    ids = torch.randint(0, 100, TOKENS)
    results = []
    for recompute in (False, True):
        model.zero_grad(set_to_none=True)
        saved: dict[int, int] = {}
        with kernels_enabled(model, KernelConfig(mlp_recompute=recompute)) as patch:
            assert patch.counts["swiglu"] == 2 and patch.counts["mlp_recompute"] == 2 * recompute
            with _counting_saved(saved):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), sum(saved.values()), grads))
    (loss_ref, bytes_ref, g_ref), (loss, nbytes, g) = results
    assert torch.equal(loss, loss_ref) and len(g) == 2 * 7 * 2  # 2 layers x 7 linears x (A, B)
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
