"""Configuration of a FastVLA model: a composite of vision, text, fusion and action-head configs.

Built the way ``transformers.LlavaConfig`` composes its vision and text configs, so any Hugging Face
vision tower (SigLIP, DINOv2, CLIP, ViT, ResNet, ConvNeXt) and any causal LM (Llama, Qwen2, SmolLM,
Gemma, ...) can be combined by config or hub id.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from fastvla.utils.image import as_hw

#: Vision ``model_type``s whose tower returns a (B, C, h, w) feature map (tokens are its pixels).
CONV_VISION_TYPES = ("resnet", "convnext", "convnextv2", "regnet")
#: Vision ``model_type``s whose tower returns (B, N, D) patch tokens.
VIT_VISION_TYPES = ("siglip_vision_model", "clip_vision_model", "vit", "dinov2", "siglip2_vision_model")


class FusionConfig(PreTrainedConfig):
    """How visual tokens of all cameras become the decoder's visual prefix.

    Args:
        mode: ``"latent"``: ``num_queries`` learned queries, conditioned on the instruction, cross-attend to
            all cameras' tokens (fixed decoder length whatever the camera count or resolution).
            ``"prefix"``: every projected visual token is prepended (the LLaVA / OpenVLA way).
        num_queries: number of fused tokens in ``latent`` mode.
        num_layers: cross-attention blocks (each: cross-attention, query self-attention, MLP).
        num_heads: attention heads; must divide the fusion width.
        hidden_size: fusion width (default: the decoder's hidden size); a narrower fusion keeps a 7B model's
            fusion small, its output is projected to the decoder width.
        mlp_ratio: MLP width as a multiple of the fusion width.
        film: FiLM-condition the visual tokens on the instruction before fusion (scale and shift per
            channel, zero-initialised so it starts as identity).
        keypoints: conv towers only: spatial-softmax keypoints (expected x, y of every channel of each
            camera's feature map) are projected and added to every action query, a position-explicit
            readout that needs no learned attention (learns from pixels quickly; Levine et al. 2016).
        keypoint_readout: where the projected keypoints go: ``"queries"`` (added to every action query) or
            ``"token"`` (their own decoder token after the state token, so no constant added to the
            queries can swamp them).
        qk_norm: ``latent`` mode: cosine attention in the fusion blocks. Queries and keys are L2-normalised
            per head and their dot product is multiplied by a learned per-head scale (initial 10, at most
            100; Swin Transformer V2's attention), so attention can be sharp from the first update instead
            of starting uniform (plain dot-product logits of freshly initialised projections are ~0, and
            uniform attention over the visual tokens is mean pooling). Off by default: older checkpoints
            have no scale parameters.
        dropout: dropout on attention outputs and MLPs.
    """

    model_type = "fastvla_fusion"

    mode: Literal["latent", "prefix"] = "latent"
    num_queries: int = 64
    num_layers: int = 2
    num_heads: int = 8
    hidden_size: int | None = None
    mlp_ratio: int = 4
    film: bool = True
    keypoints: bool = False
    keypoint_readout: Literal["queries", "token"] = "queries"
    qk_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.mode not in ("latent", "prefix"):
            raise ValueError(f"fusion mode {self.mode!r} is not supported; use 'latent' or 'prefix'")
        if self.keypoint_readout not in ("queries", "token"):
            raise ValueError(
                f"fusion keypoint_readout {self.keypoint_readout!r} is not supported; "
                "use 'queries' or 'token'"
            )
        if self.num_queries < 1 or self.num_layers < 0 or self.num_heads < 1:
            raise ValueError(
                f"fusion needs num_queries >= 1, num_layers >= 0, num_heads >= 1; got {self.num_queries}, "
                f"{self.num_layers}, {self.num_heads}"
            )


class ActionHeadConfig(PreTrainedConfig):
    """Head mapping the action-query hidden states to a chunk of actions.

    Args:
        head_type: ``"continuous"`` (residual MLP, masked L1 loss) or ``"discrete"`` (256-bin classifier over
            normalised actions in [-1, 1], cross-entropy loss, OpenVLA-style).
        hidden_size: width of the residual MLP.
        num_blocks: residual blocks (LayerNorm, Linear, GELU, Linear).
        num_bins: bins per action dimension of the discrete head.
        loss: ``"l1"`` or ``"mse"`` for the continuous head.
        dropout: dropout inside the residual blocks.
    """

    model_type = "fastvla_action_head"

    head_type: Literal["continuous", "discrete"] = "continuous"
    hidden_size: int = 256
    num_blocks: int = 2
    num_bins: int = 256
    loss: Literal["l1", "mse"] = "l1"
    dropout: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.head_type not in ("continuous", "discrete"):
            raise ValueError(
                f"action head type {self.head_type!r} is not supported; use 'continuous' or 'discrete'"
            )
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"action loss {self.loss!r} is not supported; use 'l1' or 'mse'")


class FastVLAConfig(PreTrainedConfig):
    """Configuration of :class:`~fastvla.model.FastVLAModel`.

    Args:
        vision: vision tower config (any ``AutoConfig``; default SigLIP). Shared by all cameras.
        text: causal LM config (any ``AutoConfig``; default Llama).
        fusion: :class:`FusionConfig`.
        action_head: :class:`ActionHeadConfig`.
        cameras: model camera names (``"front"``, ``"wrist"``) in the order of ``pixel_values``' camera
            axis; where an env keeps each one is an ``ObservationMap``'s business, and a dataset stores it
            as the ``observation.images.<camera>`` feature. ``camera_names`` (the former name) is accepted
            and read as an alias, so configs saved before the rename load unchanged.
        state_dim: proprioceptive state size ``S``.
        action_dim: action size ``A``.
        chunk_size: actions predicted per forward ``T``.
        image_size: (H, W) the vision tower sees; the processor resizes to it.
        use_depth: add a zero-initialised depth patch embedding to the RGB stem.
        max_instruction_tokens: instruction length the processor pads/truncates to.
        aux_goal_weight: weight of the auxiliary hindsight-goal loss (training only). Above 0 the model
            gets an ``aux_goal_head`` that predicts, from the action queries' mean hidden state, where the
            episode's state ends up relative to now (``aux_goal``, see :meth:`FastVLAModel.forward`);
            ``loss = action loss + aux_goal_weight * L1``. 0 (default) builds no head: the model and its
            loss are exactly those of a config without the field.

    Example:
        >>> from transformers import LlamaConfig, ResNetConfig
        >>> cfg = FastVLAConfig(vision=ResNetConfig(hidden_sizes=[64, 128], depths=[1, 1]),
        ...                     text=LlamaConfig(hidden_size=128, num_hidden_layers=2),
        ...                     state_dim=8, action_dim=7)
    """

    model_type = "fastvla"
    sub_configs_defaults = {  # noqa: RUF012 (transformers' class-level spec)
        "vision": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
        "text": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "fusion": SubConfigSpec(config_class=FusionConfig),
        "action_head": SubConfigSpec(config_class=ActionHeadConfig),
    }

    vision: dict | PreTrainedConfig | None = None
    text: dict | PreTrainedConfig | None = None
    fusion: dict | PreTrainedConfig | None = None
    action_head: dict | PreTrainedConfig | None = None
    attribute_map: ClassVar[dict[str, str]] = {"camera_names": "cameras"}  # the field's former name
    cameras: list[str] | tuple[str, ...] = ("front", "wrist")
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 8
    image_size: list[int] | tuple[int, int] = (224, 224)
    use_depth: bool = False
    max_instruction_tokens: int = 32
    aux_goal_weight: float = 0.0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if "camera_names" in kwargs:  # config.json written before the rename
            self.cameras = kwargs.pop("camera_names")
        self.image_size = as_hw(self.image_size)
        super().__post_init__(**kwargs)
        self.cameras = list(self.cameras)
        self.image_size = list(self.image_size)  # [H, W]: a list survives the JSON round trip unchanged
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be non-empty and unique; got {self.cameras}")
        for name in ("state_dim", "action_dim", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.aux_goal_weight >= 0:
            raise ValueError(f"aux_goal_weight must be >= 0 (0 = off); got {self.aux_goal_weight}")
        if self.fusion_dim % self.fusion.num_heads:
            raise ValueError(
                f"fusion.num_heads={self.fusion.num_heads} must divide the fusion width {self.fusion_dim}"
            )
        vision_size = getattr(self.vision, "image_size", None)
        if (
            self.vision_kind == "vit"
            and vision_size is not None
            and list(as_hw(vision_size)) != self.image_size
        ):
            raise ValueError(
                f"image_size={self.image_size} differs from the vision tower's image_size={vision_size}; "
                "set both to the same size (ViT position embeddings are sized for it)"
            )

    @property
    def fusion_dim(self) -> int:
        """Width of the fusion module (``fusion.hidden_size`` or the decoder width in prefix mode)."""
        if self.fusion.mode == "prefix" or self.fusion.hidden_size is None:
            return self.text.hidden_size
        return self.fusion.hidden_size

    @property
    def vision_kind(self) -> str:
        """``"conv"`` for feature-map towers (ResNet, ConvNeXt), ``"vit"`` for patch-token towers."""
        return "conv" if self.vision.model_type in CONV_VISION_TYPES else "vit"

    @property
    def num_cameras(self) -> int:
        """Number of cameras the model expects."""
        return len(self.cameras)


__all__ = ["ActionHeadConfig", "FastVLAConfig", "FusionConfig"]
