"""Kernel rows of ``benchmarks/gpu.py``: fused Triton kernels vs eager PyTorch vs ``torch.compile`` on the
7B shapes, and the fused NF4 matmul vs bitsandbytes vs a bf16 weight (run via ``_gpu_rows.py kernels``).
"""

from typing import Any

import torch


def row_kernels() -> list[dict[str, Any]]:
    from triton.testing import do_bench

    from fastvla import kernels as K

    torch.manual_seed(0)
    rows = []
    tokens = 8 * 280
    x = torch.randn(tokens, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(tokens, 11008, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn(tokens, 11008, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q = torch.randn(8, 280, 32, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    k = torch.randn(8, 280, 32, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    cos = torch.randn(8, 280, 128, device="cuda", dtype=torch.bfloat16)
    sin = torch.randn(8, 280, 128, device="cuda", dtype=torch.bfloat16)

    def hf_rms(x, w):  # Hugging Face LlamaRMSNorm.forward
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype)

    def hf_swiglu(g, u):
        return torch.nn.functional.silu(g) * u

    def hf_rope(q, k, cos, sin):
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        return q * c + K.rope.rotate_half(q) * s, k * c + K.rope.rotate_half(k) * s

    cases = {
        "rms_norm (2240x4096)": (hf_rms, lambda x, w: K.rms_norm(x, w, 1e-5), (x, w), 2 * x.numel() * 2),
        "swiglu (2240x11008)": (hf_swiglu, K.swiglu, (g, u), 3 * g.numel() * 2),
        "rope q+k (8x32x280x128)": (hf_rope, K.apply_rope, (q, k, cos, sin), 4 * q.numel() * 2),
    }
    for name, (eager, fused, args, fwd_bytes) in cases.items():
        compiled = torch.compile(eager)
        row: dict[str, Any] = {"row": "kernels", "op": name, "fwd_min_mb": round(fwd_bytes / 1e6, 1)}
        for label, fn in (("eager", eager), ("compile", compiled), ("triton", fused)):
            out = fn(*args)
            outs = out if isinstance(out, tuple) else (out,)
            grads = [torch.randn_like(o) for o in outs]
            inputs = [a for a in args if a.requires_grad]

            def fwd(fn=fn, args=args):
                return fn(*args)

            def fwd_bwd(fn=fn, args=args, grads=grads, inputs=inputs):
                o = fn(*args)
                torch.autograd.grad(o if isinstance(o, tuple) else (o,), inputs, grads)

            with torch.no_grad():
                row[f"{label}_fwd_us"] = round(
                    1000 * do_bench(fwd, warmup=25, rep=200, return_mode="median"), 1
                )
            row[f"{label}_fwdbwd_us"] = round(
                1000 * do_bench(fwd_bwd, warmup=25, rep=200, return_mode="median"), 1
            )
        ref = eager(*[a.detach().double() if a.is_floating_point() else a for a in args])
        got = fused(*args)
        ref, got = (ref if isinstance(ref, tuple) else (ref,)), (got if isinstance(got, tuple) else (got,))
        row["max_rel_err"] = max(((o.double() - r).norm() / r.norm()).item() for o, r in zip(got, ref))
        row["triton_fwd_gbps"] = round(fwd_bytes / (row["triton_fwd_us"] * 1e3), 1)
        rows.append(row)
    rows += _nf4_rows()
    return rows


def _nf4_rows() -> list[dict[str, Any]]:
    """Fused NF4 matmul vs bitsandbytes (dequantise + cuBLAS) vs a bf16 weight, on the 7B decoder's and
    SigLIP-so400m's linear shapes at 1, 88 and 256 tokens, plus the decoder's per-forward projection.

    Each shape is tuned on its first call (``fastvla.kernels.nf4``); the tuned configuration is reported.
    Times are ``do_bench`` medians with the L2 flushed between runs (the weights of a real forward are
    never L2-resident either).
    """
    import bitsandbytes as bnb
    from triton.testing import do_bench

    from fastvla.kernels import nf4 as nf4_mod

    decoder = {"q/k/v/o": (4096, 4096), "gate/up": (4096, 11008), "down": (11008, 4096)}  # in -> out
    siglip = {"siglip qkv/out": (1152, 1152), "siglip fc1": (1152, 4304), "siglip fc2": (4304, 1152)}
    rows: list[dict[str, Any]] = []
    per_layer: dict[str, float] = {"bnb_us": 0.0, "fused_us": 0.0, "bf16_us": 0.0}
    for name, (k, n) in {**decoder, **siglip}.items():
        layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer = layer.to(torch.bfloat16).cuda()  # double quantisation (compress_statistics) on: QLoRA's
        state = layer.weight.quant_state
        w = bnb.functional.dequantize_4bit(layer.weight.data, state)  # (N, K) bf16
        for tokens in (1, 88, 256):
            x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
            with torch.no_grad():
                ref = (x.float() @ w.float().t()).double()
                got = nf4_mod.nf4_linear(x, layer.weight, state)  # tunes this shape
                fns = {
                    "bnb_us": lambda layer=layer, x=x: layer(x),
                    "fused_us": lambda x=x, layer=layer, state=state: nf4_mod.nf4_linear(
                        x, layer.weight, state
                    ),
                    "bf16_us": lambda x=x, w=w: x @ w.t(),
                }
                times = {
                    key: round(1000 * do_bench(fn, warmup=25, rep=100, return_mode="median"), 1)
                    for key, fn in fns.items()
                }
            cfg = nf4_mod.tuned_configs().get(
                (nf4_mod._bucket(tokens), n, k, torch.bfloat16, bool(state.nested), x.device.index)
            )
            rows.append(
                {
                    "row": "kernels",
                    "op": f"nf4 {name} {tokens}x{k} @ {n}x{k}",
                    **times,
                    "fused_vs_bnb": round(times["bnb_us"] / times["fused_us"], 2),
                    "fused_weight_gbps": round(n * k / 2 / (times["fused_us"] * 1e3), 1),
                    "max_rel_err": ((got.double() - ref).norm() / ref.norm()).item(),
                    "config": (
                        "K % 64 != 0: bitsandbytes"
                        if not nf4_mod.supported(state)
                        else repr(cfg)
                        if cfg is not None
                        else "bitsandbytes (faster than every config)"
                    ),
                    "tune_us": dict(  # the tuner's timings, fastest first
                        sorted(
                            nf4_mod.TUNE_TIMES.get((tokens, n, k, torch.bfloat16), {}).items(),
                            key=lambda kv: kv[1],
                        )[:6]
                    ),
                }
            )
            if tokens == 88 and name in decoder:
                count = 4 if name == "q/k/v/o" else (2 if name == "gate/up" else 1)
                for key in per_layer:
                    per_layer[key] += count * times[key]
        del layer, w
    rows.append(
        {
            "row": "kernels",
            "op": "nf4 decoder layer sum (7 linears, 88 tokens) x 32 layers, ms",
            **{key.replace("_us", "_ms"): round(32 * v / 1000, 3) for key, v in per_layer.items()},
        }
    )
    for row in rows:
        print(row, flush=True)
    return rows
