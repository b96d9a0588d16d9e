"""Small image augmentations on uint8 ``(3, H, W)`` tensors (what :class:`TrainingDataset` yields).

Each is a callable ``image -> image`` that keeps dtype uint8 and the shape, so it can run inside
DataLoader workers before batching. Randomness comes from torch's global generator (seeded per worker
by the DataLoader).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor], torch.Tensor]


def _check(image: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"augmentations take uint8 (3, H, W) images; got {image.dtype} {tuple(image.shape)}")


class RandomShift:
    """Pad by replicating the border, then crop back at a random offset (DrQ's random shift).

    Args:
        pad: maximum shift in pixels.
    """

    def __init__(self, pad: int = 4):
        if pad < 0:
            raise ValueError(f"pad={pad} must be >= 0")
        self.pad = pad

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _check(image)
        if self.pad == 0:
            return image
        h, w = image.shape[1:]
        padded = F.pad(image[None].float(), (self.pad,) * 4, mode="replicate")[0]  # (3, H+2p, W+2p)
        dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        return padded[:, dy : dy + h, dx : dx + w].to(torch.uint8)


class RandomCrop:
    """Crop a random window covering ``scale`` of each side and resize it back to the input size.

    Args:
        scale: ``(min, max)`` fraction of height/width kept.
    """

    def __init__(self, scale: tuple[float, float] = (0.85, 1.0)):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale={scale} must satisfy 0 < min <= max <= 1")
        self.scale = scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _check(image)
        h, w = image.shape[1:]
        s = float(torch.empty(1).uniform_(*self.scale))
        ch, cw = max(1, round(h * s)), max(1, round(w * s))
        y = int(torch.randint(0, h - ch + 1, (1,)))
        x = int(torch.randint(0, w - cw + 1, (1,)))
        crop = image[None, :, y : y + ch, x : x + cw].float()  # (1, 3, ch, cw)
        out = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out[0].round().clamp(0, 255).to(torch.uint8)


class ColorJitter:
    """Random brightness, contrast and saturation factors in ``[1 - x, 1 + x]``.

    Args:
        brightness: brightness jitter strength.
        contrast: contrast jitter strength.
        saturation: saturation jitter strength.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= v < 1:
                raise ValueError(f"{name}={v} must be in [0, 1)")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @staticmethod
    def _factor(strength: float) -> float:
        return float(torch.empty(1).uniform_(1 - strength, 1 + strength)) if strength else 1.0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _check(image)
        x = image.float()
        x = x * self._factor(self.brightness)
        mean = x.mean()
        x = (x - mean) * self._factor(self.contrast) + mean
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]  # (1, H, W)
        x = (x - gray) * self._factor(self.saturation) + gray
        return x.round().clamp(0, 255).to(torch.uint8)


class Compose:
    """Apply augmentations in order."""

    def __init__(self, transforms: Sequence[Augment]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            image = t(image)
        return image


def default_augment(
    shift: int = 4, crop_scale: tuple[float, float] | None = None, jitter: float = 0.2
) -> Compose:
    """Random shift (or random crop when ``crop_scale`` is given) followed by colour jitter."""
    spatial: Augment = RandomCrop(crop_scale) if crop_scale else RandomShift(shift)
    return Compose([spatial, ColorJitter(jitter, jitter, jitter)])
