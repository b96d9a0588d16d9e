"""Vision encoder shared by all cameras: an HF tower, camera embeddings, optional depth and FiLM.

Two families of towers are supported:

* ViT-family (SigLIP, CLIP, ViT, DINOv2): the tower returns patch tokens (B, N, Dv).
* Convolutional (ResNet, ConvNeXt): the tower returns a feature map (B, Dv, h, w); each pixel of it is a
  token and a fixed 2D sine-cosine position code is added (cross-attention is permutation invariant, so
  without it the fusion could not tell where an object is). Small conv towers learn from pixels in
  minutes on a CPU, where a ViT from scratch does not (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers import AutoModel

from fastvla.model.configuration import FastVLAConfig


def vision_feature_dim(config: FastVLAConfig) -> int:
    """Channel width ``Dv`` of the tokens the vision tower produces."""
    vision = config.vision
    if config.vision_kind == "conv":
        return int(vision.hidden_sizes[-1])
    return int(vision.hidden_size)


def sincos_2d(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2D sine-cosine position code of an ``h x w`` grid, shape (h * w, dim)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    y = ys.reshape(-1, 1) * omega  # (h*w, quarter)
    x = xs.reshape(-1, 1) * omega
    code = torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)  # (h*w, 4*quarter)
    if code.shape[1] < dim:
        code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
    return code.to(dtype)


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)``, zero-initialised (identity)."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        self.proj._zero_init = True  # read by FastVLAPreTrainedModel._init_weights

    def forward(self, x: torch.Tensor, cond: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """Modulate ``x`` along ``channel_dim`` with the per-sample condition ``cond`` (B, cond_dim)."""
        gamma, beta = self.proj(cond.to(self.proj.weight.dtype)).to(x.dtype).chunk(2, dim=-1)  # (B, C) each
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[channel_dim] = x.shape[channel_dim]
        return x * (1 + gamma.reshape(shape)) + beta.reshape(shape)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [-1, 1] of every channel's softmax over positions: (B, C, h, w) -> (B, C * 2)."""
    b, c, h, w = features.shape
    attn = features.float().flatten(2).softmax(-1)  # (B, C, h*w)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=features.device),
        torch.linspace(-1, 1, w, device=features.device),
        indexing="ij",
    )
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (h*w, 2)
    return (attn @ grid).reshape(b, c * 2).to(features.dtype)  # (B, C*2)


def _find_stem(tower: nn.Module, in_channels: int) -> nn.Conv2d:
    for module in tower.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return module
    raise ValueError(
        f"no Conv2d with {in_channels} input channels in {type(tower).__name__}; depth unsupported"
    )


class VisionEncoder(nn.Module):
    """Encodes every camera with one shared tower and tags the tokens with a learned camera embedding.

    Args:
        config: the model config (uses ``vision``, ``cameras``, ``use_depth``, ``fusion.film``).
        cond_dim: width of the instruction embedding used for FiLM.
    """

    def __init__(self, config: FastVLAConfig, cond_dim: int):
        super().__init__()
        self.kind = config.vision_kind
        self.out_dim = vision_feature_dim(config)
        self.tower = AutoModel.from_config(config.vision)
        if self.kind == "vit" and getattr(self.tower, "pooler", None) is not None:
            self.tower.pooler = None  # ViT's CLS pooler is unused (all tokens go to the fusion)
        self.camera_embedding = nn.Embedding(config.num_cameras, self.out_dim)
        self.depth_embed: nn.Conv2d | None = None
        if config.use_depth:
            stem = _find_stem(self.tower, getattr(config.vision, "num_channels", 3))
            # Same geometry as the RGB stem; zero-initialised so pretrained RGB features start unchanged.
            self.depth_embed = nn.Conv2d(
                1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
            )
            self.depth_embed._zero_init = True
            self._stem = [stem]  # a list so the stem is not registered twice
        self.film_stages = nn.ModuleList()
        self._stages: list[nn.Module] = []
        if config.fusion.film and self.kind == "conv":
            # FiLM after every stage: the instruction steers the features early (OpenVLA-OFT, RT-1).
            self._stages = list(self.tower.encoder.stages)
            self.film_stages = nn.ModuleList(FiLM(cond_dim, c) for c in config.vision.hidden_sizes)
        self.film_out = FiLM(cond_dim, self.out_dim) if config.fusion.film and self.kind == "vit" else None
        self.last_keypoints: torch.Tensor | None = None  # (B, cams, 2 * Dv) of the last conv forward

    @contextlib.contextmanager
    def _hooks(self, cond: torch.Tensor | None, depth: torch.Tensor | None) -> Iterator[None]:
        """Install the depth and FiLM forward hooks for one forward pass only."""
        handles = []
        if depth is not None and self.depth_embed is not None:

            def add_depth(_module, _inputs, output):
                return output + self.depth_embed(depth.to(self.depth_embed.weight.dtype)).to(output.dtype)

            handles.append(self._stem[0].register_forward_hook(add_depth))
        if cond is not None:
            for stage, film in zip(self._stages, self.film_stages):
                handles.append(stage.register_forward_hook(lambda _m, _i, out, f=film: f(out, cond, 1)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(
        self,
        pixel_values: torch.Tensor,
        depth: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode all cameras.

        Args:
            pixel_values: (B, n_cams, 3, H, W), already normalised for the tower.
            depth: optional (B, n_cams, 1, H, W) depth in metres.
            cond: optional (B, cond_dim) instruction embedding for FiLM.

        Returns:
            Visual tokens (B, n_cams, N, Dv).
        """
        b, n_cams = pixel_values.shape[:2]
        if n_cams > self.camera_embedding.num_embeddings:
            raise ValueError(
                f"pixel_values has {n_cams} cameras but the model was built for "
                f"{self.camera_embedding.num_embeddings}"
            )
        dtype = next(p.dtype for p in self.tower.parameters() if p.is_floating_point())
        flat = pixel_values.flatten(0, 1).to(dtype)  # (B*cams, 3, H, W)
        flat_depth = depth.flatten(0, 1) if depth is not None else None  # (B*cams, 1, H, W)
        flat_cond = cond.repeat_interleave(n_cams, dim=0) if cond is not None else None  # (B*cams, Dc)
        with self._hooks(flat_cond, flat_depth):
            out = self.tower(pixel_values=flat).last_hidden_state
        self.last_keypoints = spatial_softmax(out).unflatten(0, (b, n_cams)) if out.dim() == 4 else None
        if out.dim() == 4:  # conv feature map (B*cams, Dv, h, w) -> tokens (B*cams, h*w, Dv)
            h, w = out.shape[-2:]
            out = out.flatten(2).transpose(1, 2)
            out = out + sincos_2d(h, w, out.shape[-1], out.device, out.dtype)
        elif self.film_out is not None and flat_cond is not None:
            out = self.film_out(out, flat_cond, 2)
        tokens = out.unflatten(0, (b, n_cams))  # (B, cams, N, Dv)
        cam = self.camera_embedding(torch.arange(n_cams, device=tokens.device)).to(tokens.dtype)  # (cams, Dv)
        return tokens + cam[None, :, None, :]
