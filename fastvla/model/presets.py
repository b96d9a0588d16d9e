"""Named model presets, looked up in one dict (:data:`PRESETS`).

* ``tiny``: small ResNet tower + 2-layer, 128-wide Llama decoder; learns from 64x64 pixels on a CPU in
  minutes (tests and the demo). All Linear widths are multiples of 64 (bitsandbytes CPU kernels need it).
* ``tiny-vit``: same decoder with a 2-layer ViT tower, to exercise the ViT code paths in tests.
* ``sim-base``: the pretrained base of the built-in suite (``fastvla/checkpoints/sim-base``): a wider
  ResNet tower with FiLM, a 4-layer, 256-wide Llama decoder; small enough (~14 MB fp32) to ship in the
  repository and to fine-tune with QLoRA on a CPU, large enough to learn all five tasks on one H100 in
  about 15 minutes (``docs/sim_base.md``).
* ``openvla-7b-shape``: SigLIP-so400m-shaped ViT + Llama-2-7B-shaped decoder with random weights, for GPU
  memory/throughput benchmarks (build it on the GPU:
  ``from_preset(..., device="cuda", dtype=torch.bfloat16)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LlamaConfig, ResNetConfig, SiglipVisionConfig, ViTConfig

from fastvla.model.configuration import FastVLAConfig
from fastvla.model.tokenizer import build_tiny_tokenizer, tiny_vocab_size


@dataclass(frozen=True)
class Preset:
    """A named recipe: config fields, a local tokenizer factory and the tower's pixel normalisation.

    Attributes:
        config: function returning :class:`FastVLAConfig` keyword arguments.
        tokenizer: function building the tokenizer locally (never downloads).
        image_mean: per-channel mean the tower expects (pixels in [0, 1]).
        image_std: per-channel std the tower expects.
        description: one line for listings.
    """

    config: Callable[[], dict[str, Any]]
    tokenizer: Callable[[], Any] = build_tiny_tokenizer
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


#: The built-in suite's robot interface, every preset's default: two cameras, 8-D state, 7-D action chunks.
_SUITE_IO: dict[str, Any] = {
    "cameras": ["front", "wrist"],
    "state_dim": 8,
    "action_dim": 7,
    "chunk_size": 8,
}


def llama_config(
    hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int | None = None, **kw: Any
) -> LlamaConfig:
    """A Llama decoder config from its shape: the one place presets, benchmarks and tests write one out.

    Args:
        hidden: ``hidden_size``.
        intermediate: MLP width (``intermediate_size``).
        layers: decoder layers (``num_hidden_layers``).
        heads: attention heads (``num_attention_heads``).
        kv_heads: key/value heads for grouped-query attention; ``None`` for as many as ``heads``.
        **kw: any other :class:`~transformers.LlamaConfig` field (``vocab_size``, ``attn_implementation``...).

    Example:
        >>> llama_config(64, 128, 2, 4, vocab_size=100).num_key_value_heads
        4
    """
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads if kv_heads is None else kv_heads,
        **kw,
    )


def _llama(hidden: int, intermediate: int, layers: int, heads: int, **kw: Any) -> LlamaConfig:
    """A Llama decoder with the tiny tokenizer's special ids (pad 0, bos 2, eos 3), untied embeddings."""
    return llama_config(
        hidden,
        intermediate,
        layers,
        heads,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
        **kw,
    )


def _tiny_text() -> LlamaConfig:
    return _llama(128, 256, 2, 4, vocab_size=tiny_vocab_size(), max_position_embeddings=512)


def _tiny() -> dict[str, Any]:
    return {
        "vision": ResNetConfig(
            embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic", hidden_act="relu"
        ),
        "text": _tiny_text(),
        "fusion": {
            "mode": "latent",
            "num_queries": 16,
            "num_layers": 1,
            "num_heads": 4,
            "mlp_ratio": 2,
            "keypoints": True,
        },
        "action_head": {"hidden_size": 128, "num_blocks": 2},
        **_SUITE_IO,
        "image_size": [64, 64],
        "max_instruction_tokens": 24,
    }


def _sim_base() -> dict[str, Any]:
    cfg = _tiny()
    cfg["vision"] = ResNetConfig(
        embedding_size=32, hidden_sizes=[64, 128], depths=[2, 2], layer_type="basic", hidden_act="relu"
    )
    # head_dim 32 (4 heads x 32 = 128 < 256 wide): what the shipped checkpoint was trained with.
    cfg["text"] = _llama(
        256, 512, 4, 4, vocab_size=tiny_vocab_size(), max_position_embeddings=512, head_dim=32
    )
    cfg["fusion"] = {**cfg["fusion"], "num_queries": 32, "num_layers": 2, "num_heads": 4, "mlp_ratio": 2}
    cfg["action_head"] = {"hidden_size": 256, "num_blocks": 3}
    return cfg


def _tiny_vit() -> dict[str, Any]:
    cfg = _tiny()
    cfg["vision"] = ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    return cfg


def _openvla_7b_shape() -> dict[str, Any]:
    return {
        "vision": SiglipVisionConfig(  # SigLIP so400m/14 @ 224
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            patch_size=14,
            image_size=224,
            vision_use_head=False,  # attention-pooling head unused: all patch tokens go to the fusion
        ),
        # Llama-2-7B
        "text": _llama(
            4096, 11008, 32, 32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5
        ),
        "fusion": {
            "mode": "latent",
            "num_queries": 64,
            "num_layers": 2,
            "num_heads": 16,
            "hidden_size": 1024,
        },
        "action_head": {"hidden_size": 1024, "num_blocks": 2},
        **_SUITE_IO,
        "image_size": [224, 224],
        "max_instruction_tokens": 32,
    }


#: All presets by name.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(_tiny, description="ResNet(16,32,64) + Llama 2x128; CPU tests and demo, 64x64 images"),
    "sim-base": Preset(
        _sim_base,
        description="ResNet(32,64,128) + Llama 4x256; the shipped base of the built-in suite, 64x64",
    ),
    "tiny-vit": Preset(_tiny_vit, description="ViT 2x64 (patch 8) + Llama 2x128; ViT code paths"),
    "openvla-7b-shape": Preset(
        _openvla_7b_shape, description="SigLIP-so400m + Llama-2-7B shapes, random weights (GPU benchmarks)"
    ),
}


def random_batch(n: int, seed: int = 0, tokens: int = 5, image_size: int = 64) -> dict[str, torch.Tensor]:
    """A random training batch in the presets' robot interface, for tests and smoke runs of a preset.

    Two cameras, 8-D state and chunks of 8 7-D actions (every preset's default); instruction ids in
    [4, 40), past the tiny tokenizer's special ids; an all-ones attention mask. Drawn from one generator
    seeded with ``seed`` (pixels, ids, state, actions, in that order), so a seed gives the same batch.

    Args:
        n: samples.
        seed: the generator's seed.
        tokens: instruction tokens per sample.
        image_size: pixels per image side (64 for ``tiny``, ``tiny-vit`` and ``sim-base``).

    Example:
        >>> random_batch(2)["pixel_values"].shape
        torch.Size([2, 2, 3, 64, 64])
    """
    g = torch.Generator().manual_seed(seed)
    cams, chunk = len(_SUITE_IO["cameras"]), _SUITE_IO["chunk_size"]
    return {
        "pixel_values": torch.rand(n, cams, 3, image_size, image_size, generator=g),  # (B, cams, 3, H, W)
        "input_ids": torch.randint(4, 40, (n, tokens), generator=g),
        "attention_mask": torch.ones(n, tokens, dtype=torch.long),
        "state": torch.randn(n, _SUITE_IO["state_dim"], generator=g),
        "actions": torch.randn(n, chunk, _SUITE_IO["action_dim"], generator=g),  # (B, chunk, action_dim)
    }


def get_preset(name: str) -> Preset:
    """Look a preset up by name, with the available names in the error."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, **overrides: Any) -> FastVLAConfig:
    """:class:`FastVLAConfig` of preset ``name`` with fields replaced by ``overrides``.

    Dict overrides of sub-configs (``fusion={"num_queries": 32}``) are merged into the preset's values.
    """
    fields = get_preset(name).config()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        elif isinstance(value, dict) and key in ("vision", "text"):
            fields[key] = type(fields[key])(**{**fields[key].to_dict(), **value})
        else:
            fields[key] = value
    if "image_size" in overrides and hasattr(fields["vision"], "image_size") and "vision" not in overrides:
        size = fields["image_size"]
        square = isinstance(size, int) or size[0] == size[1]
        fields["vision"].image_size = size if isinstance(size, int) else (size[0] if square else list(size))
    return FastVLAConfig(**fields)
