"""FastVLAModel: vision tower + fusion + causal LM decoder + action head, as one ``PreTrainedModel``.

Data flow (shapes for B samples, C cameras, T = chunk_size, D = decoder width; see docs/architecture.md)::

    pixel_values (B, C, 3, H, W) --shared tower--> (B, C, N, Dv) + camera embedding
        --projector--> (B, C, N, D) --fusion (queries conditioned on instruction)--> (B, Q, D)
    decoder input: [fused (B, Q, D) | instruction tokens (B, L, D) | state token (B, 1, D) | T action queries]
    decoder last T hidden states (B, T, D) --action head--> actions (B, T, A), masked L1 loss
    (aux_goal_weight > 0, training) their mean (B, D) --aux goal head--> (B, S), L1 to the hindsight goal
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, is_flash_attn_2_available

from fastvla.model.action_head import ActionHead
from fastvla.model.attention import (
    HF_KEY,
    SDPA_FLASH,
    check_attn_implementation,
    flash_only,
    register_sdpa_flash,
    uses_sdpa_flash,
)
from fastvla.model.configuration import FastVLAConfig
from fastvla.model.fusion import Fusion, Projector
from fastvla.model.lora import add_lora
from fastvla.model.presets import preset_config
from fastvla.model.quantization import NON_QUANTIZED_MODULES as NON_QUANTIZED_MODULES  # old import path
from fastvla.model.quantization import after_quantized_load, guard_cpu_4bit, is_quantized, prepare_bnb_config
from fastvla.model.quantization import compute_dtype as compute_dtype  # old import path
from fastvla.model.vision import VisionEncoder, vision_feature_dim


@dataclass
class FastVLAOutput(ModelOutput):
    """Output of :class:`FastVLAModel`.

    Attributes:
        loss: masked action loss (when ``actions`` were given), plus ``aux_goal_weight * aux_loss`` when
            ``aux_goal`` was given.
        actions: predicted chunk (B, T, A) in normalised units.
        logits: (B, T, A, bins) for the discrete head, else None.
        hidden_states: decoder hidden states of the action queries (B, T, D).
        aux_loss: unweighted L1 of the hindsight-goal prediction (when ``aux_goal`` was given), else None.
    """

    loss: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


def default_attn_implementation(device: str | torch.device | None = None) -> str:
    """``flash_attention_2`` when flash-attn is installed and a CUDA device is used, else ``sdpa``."""
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return "flash_attention_2" if on_cuda and is_flash_attn_2_available() else "sdpa"


def attn_implementation_map(
    requested: str | None = None, device: str | torch.device | None = None
) -> dict[str, str]:
    """Per-sub-config attention backends: ``requested`` (or the automatic choice) for the decoder.

    The vision tower keeps its own default (convolutional towers have no attention at all); with
    ``sdpa_flash`` the tower and fusion run under :func:`fastvla.model.attention.flash_only` instead.

    Raises:
        ValueError: ``sdpa_flash`` for a model not built on CUDA.
    """
    if requested == SDPA_FLASH:
        check_attn_implementation(requested, device)
        register_sdpa_flash()
        requested = HF_KEY
    attn = requested or default_attn_implementation(device)
    return {"": attn, "text": attn}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _module_dtype(module: nn.Module) -> torch.dtype:
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


class FastVLAPreTrainedModel(PreTrainedModel):
    """Base class wiring FastVLA into ``transformers`` (config class, init, attention backends)."""

    config_class = FastVLAConfig
    config: FastVLAConfig
    base_model_prefix = "fastvla"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Fusion", "ActionHead"]  # noqa: RUF012 (transformers' class attribute)

    def _init_weights(self, module: nn.Module) -> None:
        # transformers skips containers without direct parameters in custom code, so leaves carry the
        # zero-init flag (FiLM projections start as identity, the depth stem as a no-op).
        std = getattr(self.config.text, "initializer_range", 0.02)
        if getattr(module, "_zero_init", False):
            init.zeros_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class FastVLAModel(FastVLAPreTrainedModel):
    """A vision-language-action model predicting a chunk of continuous (or binned) actions per forward.

    Args:
        config: :class:`~fastvla.model.FastVLAConfig`.

    Example:
        >>> model = FastVLAModel.from_preset("tiny")
        >>> out = model(pixel_values=torch.rand(2, 2, 3, 64, 64),
        ...             input_ids=torch.ones(2, 5, dtype=torch.long), state=torch.zeros(2, 8))
        >>> out.actions.shape
        torch.Size([2, 8, 7])
    """

    def __init__(self, config: FastVLAConfig):
        super().__init__(config)
        dim = config.text.hidden_size
        self.vision = VisionEncoder(config, cond_dim=dim)
        self.projector = Projector(vision_feature_dim(config), config.fusion_dim)
        self.fusion = Fusion(config)
        self.language_model = AutoModel.from_config(config.text)
        self.state_proj = nn.Linear(config.state_dim, dim)
        self.action_queries = nn.Embedding(config.chunk_size, dim)
        self.action_head = ActionHead(config.action_head, dim, config.action_dim)
        self.keypoint_proj = None
        if config.fusion.keypoints and config.vision_kind == "conv":
            self.keypoint_proj = nn.Linear(config.num_cameras * 2 * vision_feature_dim(config), dim)
        self.aux_goal_head = None
        if config.aux_goal_weight > 0:  # training-only head; none at 0, so old checkpoints load unchanged
            self.aux_goal_head = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, config.state_dim)
            )
        self.post_init()

    # ----------------------------------------------------------------------------------------- forward
    def get_input_embeddings(self) -> nn.Module:
        """The decoder's token embedding."""
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the decoder's token embedding."""
        self.language_model.set_input_embeddings(value)

    def encode_instruction(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, D) and their masked mean (B, D), the instruction's conditioning vector."""
        tokens = self.get_input_embeddings()(input_ids)  # (B, L, D)
        mask = attention_mask[..., None].to(tokens.dtype)  # (B, L, 1)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return tokens, pooled

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        instruction: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused visual tokens for the decoder: (B, Q, D) (latent) or (B, C * N, D) (prefix)."""
        if pixel_values.dim() != 5:
            raise ValueError(
                f"pixel_values must be (B, n_cams, 3, H, W); got shape {tuple(pixel_values.shape)}. "
                "Use FastVLAProcessor to build model inputs."
            )
        # sdpa_flash: the tower's and the fusion's attention (never masked) on FlashAttention-2 only
        with flash_only() if uses_sdpa_flash(self.config) else contextlib.nullcontext():
            tokens = self.vision(pixel_values, depth=depth, cond=instruction)  # (B, C, N, Dv)
            visual = self.projector(tokens)  # (B, C, N, D)
            fusion_dtype = _module_dtype(self.fusion) if self.fusion.mode == "latent" else visual.dtype
            cond = instruction.to(fusion_dtype) if instruction is not None else None
            return self.fusion(visual.to(fusion_dtype), cond)

    def _keypoint_summary(self, batch: int) -> torch.Tensor:
        """(B, D) projection of all cameras' spatial-softmax keypoints (missing cameras count as zeros)."""
        kp = self.vision.last_keypoints  # (B, cams, 2 * Dv)
        full = self.config.num_cameras
        if kp.shape[1] < full:
            kp = torch.cat([kp, kp.new_zeros(batch, full - kp.shape[1], kp.shape[2])], dim=1)
        weight = self.keypoint_proj.weight
        return self.keypoint_proj(kp.flatten(1).to(weight.dtype))  # (B, D)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        action_is_pad: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        aux_goal: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> FastVLAOutput:
        """Predict a chunk of actions and, given targets, the masked loss.

        Args:
            pixel_values: (B, n_cams, 3, H, W) normalised images.
            input_ids: (B, L) instruction tokens.
            attention_mask: (B, L), 1 for real tokens (default all ones).
            state: (B, S) normalised proprioceptive state (default zeros).
            actions: (B, T, A) normalised target actions (optional).
            action_is_pad: (B, T) bool, True for padded target steps.
            depth: (B, n_cams, 1, H, W) depth in metres (models built with ``use_depth``).
            aux_goal: (B, S) hindsight-goal target for training (models built with ``aux_goal_weight > 0``):
                the state at the episode's last frame minus the state now, divided by the state's std.

        Returns:
            :class:`FastVLAOutput` with ``actions`` (B, T, A) in normalised units.

        Raises:
            ValueError: target actions of the wrong shape, or ``aux_goal`` for a model without the head.
        """
        batch = pixel_values.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embed_dtype = self.get_input_embeddings().weight.dtype
        text, pooled = self.encode_instruction(input_ids, attention_mask)  # (B, L, D), (B, D)
        visual = self.encode_images(pixel_values, pooled, depth).to(embed_dtype)  # (B, Q, D)
        if state is None:
            state = torch.zeros(batch, self.config.state_dim, device=pixel_values.device)
        state_tok = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None].to(
            embed_dtype
        )  # (B,1,D)
        steps = torch.arange(self.config.chunk_size, device=input_ids.device)
        queries = self.action_queries(steps)[None].expand(batch, -1, -1).to(embed_dtype)  # (B, T, D)
        extra = []  # decoder tokens between the state and the action queries
        if self.keypoint_proj is not None:
            keypoints = self._keypoint_summary(batch).to(embed_dtype)[:, None]  # (B, 1, D)
            if self.config.fusion.keypoint_readout == "token":
                extra.append(keypoints)
            else:
                queries = queries + keypoints
        inputs = torch.cat([visual, text, state_tok, *extra, queries], dim=1)  # (B, Q + L + 1 (+1) + T, D)
        ones = attention_mask.new_ones
        mask = torch.cat(
            [ones(batch, visual.shape[1]), attention_mask, ones(batch, 1 + len(extra) + queries.shape[1])],
            dim=1,
        )
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # padding does not shift positions
        hidden = self.language_model(
            inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        action_hidden = hidden[:, -queries.shape[1] :]  # (B, T, D)
        pred, logits = self.action_head(action_hidden)
        loss = None
        if actions is not None:
            if actions.shape[1:] != pred.shape[1:]:
                raise ValueError(
                    f"target actions have shape {tuple(actions.shape)} but the model predicts "
                    f"(B, {self.config.chunk_size}, {self.config.action_dim}); check chunk_size/action_dim"
                )
            loss = self.action_head.loss(pred, logits, actions, action_is_pad)
        aux_loss = None
        if aux_goal is not None:
            aux_loss = self._aux_goal_loss(action_hidden, aux_goal)
            weighted = self.config.aux_goal_weight * aux_loss
            loss = weighted if loss is None else loss + weighted
        return FastVLAOutput(
            loss=loss, actions=pred, logits=logits, hidden_states=action_hidden, aux_loss=aux_loss
        )

    def _aux_goal_loss(self, action_hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 between the head's prediction from the action queries' mean state and ``target`` (B, S)."""
        if self.aux_goal_head is None:
            raise ValueError(
                "aux_goal was given but this model has no aux_goal_head (config.aux_goal_weight=0); build "
                "it with aux_goal_weight > 0 (fastvla train --model.aux-goal-weight W), or drop aux_goal"
            )
        if target.shape[1:] != (self.config.state_dim,):
            raise ValueError(
                f"aux_goal has shape {tuple(target.shape)}; the model expects (B, {self.config.state_dim})"
            )
        pooled = action_hidden.to(_module_dtype(self.aux_goal_head)).mean(dim=1)  # (B, T, D) -> (B, D)
        return (self.aux_goal_head(pooled).float() - target.float()).abs().mean()

    # ---------------------------------------------------------------------------------------- builders
    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        quantization_config: Any = None,
        **overrides: Any,
    ) -> FastVLAModel:
        """Build a randomly initialised model from a named preset (see :data:`fastvla.model.PRESETS`).

        Args:
            name: preset name, e.g. ``"tiny"``, ``"tiny-vit"``, ``"openvla-7b-shape"``.
            dtype: parameter dtype (weights are created directly in it, no fp32 copy).
            device: device the weights are created on (e.g. ``"cuda"`` for a 7B model; ``"meta"`` for a
                shape-only skeleton).
            attn_implementation: ``"sdpa"``, ``"sdpa_flash"`` (CUDA), ``"flash_attention_2"``, ``"eager"``;
                default automatic (see :mod:`fastvla.model.attention`).
            quantization_config: a ``BitsAndBytesConfig``: the model is built in ``dtype`` on ``device``,
                written to a temporary folder and reloaded quantised (vision tower and decoder only).
            **overrides: config fields to change (``cameras``, ``state_dim``, ``action_dim``,
                ``chunk_size``, ``image_size``, ``use_depth``, or ``fusion={...}`` etc.).
        """
        config = preset_config(name, **overrides)
        if quantization_config is not None:
            with tempfile.TemporaryDirectory(prefix="fastvla-preset-") as tmp:
                cls.from_preset(name, dtype=dtype, device=device, **overrides).save_pretrained(tmp)
                return cls.from_pretrained(
                    tmp,
                    quantization_config=quantization_config,
                    dtype=dtype,
                    device_map=str(device) if device is not None else None,
                    attn_implementation=attn_implementation,
                )
        return cls.from_config_on_device(
            config, dtype=dtype, device=device, attn_implementation=attn_implementation
        )

    @classmethod
    def from_config_on_device(
        cls,
        config: FastVLAConfig,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
    ) -> FastVLAModel:
        """Instantiate ``config`` with random weights created directly on ``device`` in ``dtype``."""
        config = copy.deepcopy(config)
        config._attn_implementation = attn_implementation_map(attn_implementation, device)
        with torch.device(device or "cpu"), _default_dtype(dtype):
            return cls(config)

    @classmethod
    def from_backbones(
        cls,
        vision: str,
        text: str,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        **config_kwargs: Any,
    ) -> FastVLAModel:
        """Build a model around pretrained backbones from the Hub (or local folders).

        The vision tower and decoder weights are loaded; fusion, projector and head are new.

        Args:
            vision: hub id or path of a vision model (SigLIP, CLIP, DINOv2, ViT, ResNet, ConvNeXt); for
                dual-encoder checkpoints (SigLIP, CLIP) the vision half is used.
            text: hub id or path of a causal LM (Llama, Qwen2, SmolLM, Gemma, ...).
            dtype: dtype to load the backbones in.
            device: device for the whole model.
            attn_implementation: attention backend (default automatic).
            **config_kwargs: other :class:`FastVLAConfig` fields (``cameras``, ``state_dim``, ...).

        Example:
            >>> model = FastVLAModel.from_backbones(  # doctest: +SKIP
            ...     vision="google/siglip-base-patch16-224", text="HuggingFaceTB/SmolLM2-360M",
            ...     cameras=["front", "wrist"], state_dim=8, action_dim=7, chunk_size=8)
        """
        attn = attn_implementation_map(attn_implementation, device)
        vision_cfg = AutoConfig.from_pretrained(vision)
        vision_cfg = getattr(vision_cfg, "vision_config", None) or vision_cfg
        if hasattr(vision_cfg, "vision_use_head"):
            vision_cfg.vision_use_head = False  # SigLIP's pooling head is unused
        text_cfg = AutoConfig.from_pretrained(text)
        text_cfg = getattr(text_cfg, "text_config", None) or text_cfg
        if "image_size" not in config_kwargs and hasattr(vision_cfg, "image_size"):
            config_kwargs["image_size"] = vision_cfg.image_size
        config = FastVLAConfig(vision=vision_cfg, text=text_cfg, **config_kwargs)
        model = cls.from_config_on_device(config, dtype=dtype, device=device, attn_implementation=attn)
        tower = AutoModel.from_pretrained(vision, config=vision_cfg, dtype=dtype)
        model.vision.tower.load_state_dict(tower.state_dict(), strict=False)
        decoder = AutoModel.from_pretrained(
            text, config=text_cfg, dtype=dtype, attn_implementation=attn["text"]
        )
        model.language_model.load_state_dict(decoder.state_dict())
        model.config.vision._name_or_path = vision
        model.config.text._name_or_path = text
        return model.to(device) if device is not None else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved FastVLA model; quantise it with ``quantization_config=BitsAndBytesConfig(...)``.

        With a bitsandbytes config, the vision tower and decoder are quantised while
        :data:`NON_QUANTIZED_MODULES` (projector, fusion, state projection, action queries, action head,
        FiLM) stay unquantised in float32 (trainable). On CPU, 4-bit layers are guarded against
        bitsandbytes' inference repacking (see :func:`fastvla.model.quantization.guard_cpu_4bit`).
        ``attn_implementation`` defaults to :func:`default_attn_implementation`.
        """
        quant = kwargs.get("quantization_config")
        if quant is not None:
            kwargs["quantization_config"] = prepare_bnb_config(quant)
        attn = kwargs.get("attn_implementation")
        if attn is None or isinstance(attn, str):
            kwargs["attn_implementation"] = attn_implementation_map(attn, kwargs.get("device_map"))
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if quant is not None or is_quantized(model):  # also pre-quantised checkpoints
            after_quantized_load(model)
        return model

    # ----------------------------------------------------------------- Unsloth-shaped fine-tuning API
    @staticmethod
    def get_peft_model(
        model: nn.Module,
        r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_vision: bool = True,
        target_language: bool = True,
        attention: bool = True,
        mlp: bool = True,
        target_modules: tuple[str, ...] = (),
        modules_to_save: tuple[str, ...] = (),
        use_gradient_checkpointing: bool = False,
        use_rslora: bool = False,
        random_state: int | None = None,
    ) -> Any:
        """Add LoRA adapters (PEFT) the way Unsloth's ``FastLanguageModel.get_peft_model`` does.

        FastVLA's own small modules (projector, fusion, state projection, action queries, action head)
        train in full; the vision tower and decoder — 4-bit NF4 if loaded so — get adapters.

        Args:
            model: a :class:`FastVLAModel` (full precision or quantised).
            r: adapter rank.
            lora_alpha: scaling numerator (``alpha / r``).
            lora_dropout: dropout on the adapter input (0 keeps the fused LoRA kernels).
            target_vision: adapt the vision tower.
            target_language: adapt the decoder.
            attention: adapt attention projections.
            mlp: adapt MLP layers (and a conv tower's convolutions).
            target_modules: more module-name suffixes to adapt.
            modules_to_save: more modules trained in full (FastVLA's own modules always are).
            use_gradient_checkpointing: recompute decoder activations in the backward pass.
            use_rslora: rank-stabilised scaling ``alpha / sqrt(r)``.
            random_state: seed of the adapters' initialisation (``None``: the global torch generator).

        Returns:
            The ``PeftModel``.

        Example:
            >>> from transformers import BitsAndBytesConfig
            >>> model = FastVLAModel.from_pretrained(  # doctest: +SKIP
            ...     "fastvla/checkpoints/sim-base", quantization_config=BitsAndBytesConfig(load_in_4bit=True)
            ... )
            >>> model = FastVLAModel.get_peft_model(model, r=16)  # doctest: +SKIP
            >>> FastVLAModel.for_training(model)  # train ...  # doctest: +SKIP
            >>> FastVLAModel.for_inference(model)  # evaluate ...  # doctest: +SKIP
        """
        if use_gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if random_state is not None:
            torch.manual_seed(random_state)
        return add_lora(
            model,
            r=r,
            alpha=lora_alpha,
            dropout=lora_dropout,
            target_vision=target_vision,
            target_language=target_language,
            attention=attention,
            mlp=mlp,
            extra_targets=tuple(target_modules),
            train_modules=tuple(modules_to_save),  # add_lora always adds NON_QUANTIZED_MODULES
            use_rslora=use_rslora,
        )

    @staticmethod
    def for_inference(model: nn.Module) -> nn.Module:
        """Switch ``model`` (plain or PEFT-wrapped) to inference: eval mode, no activation recomputation.

        On CPU the 4-bit layers stay guarded against bitsandbytes' in-place inference repacking, so a
        later :meth:`for_training` gets correct LoRA gradients (see ``guard_cpu_4bit``).
        """
        guard_cpu_4bit(model)
        model.eval()
        return model

    @staticmethod
    def for_training(model: nn.Module) -> nn.Module:
        """Switch ``model`` back to training mode (dropout on, adapters trainable)."""
        guard_cpu_4bit(model)
        model.train()
        return model


AutoConfig.register("fastvla", FastVLAConfig, exist_ok=True)
AutoModel.register(FastVLAConfig, FastVLAModel, exist_ok=True)
