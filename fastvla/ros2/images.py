"""Conversions between ROS 2 image messages and ``uint8 (H, W, 3)`` RGB arrays (what policies take)."""

from __future__ import annotations

import io

import numpy as np

from fastvla.ros2.msgs import CompressedImage, Header, Image

# encoding -> (channels, index order to get RGB)
_ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
    "8uc1": (1, (0, 0, 0)),
    "8uc3": (3, (0, 1, 2)),
}


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` with 8-bit channels into a ``uint8 (H, W, 3)`` RGB array.

    Rows padded beyond ``width * channels`` (``step`` larger than needed) are cropped.
    """
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"image encoding {msg.encoding!r} not supported; publish one of {sorted(_ENCODINGS)} "
            "(e.g. `image_transport` raw rgb8/bgr8) or a CompressedImage"
        )
    channels, order = _ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if step < w * channels or len(msg.data) < h * step:
        raise ValueError(
            f"image {w}x{h} {msg.encoding} needs step >= {w * channels} and {h * step} bytes; "
            f"got step {step} and {len(msg.data)} bytes"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=h * step).reshape(h, step)
    pixels = rows[:, : w * channels].reshape(h, w, channels)  # (H, W, C)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG/PNG) into ``uint8 (H, W, 3)`` RGB."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(msg.data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        what = f"format {msg.format!r}, {len(msg.data)} bytes"
        raise ValueError(f"cannot decode CompressedImage ({what}): {err}") from err


def to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Either image message as ``uint8 (H, W, 3)`` RGB."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


def rgb_to_image(rgb: np.ndarray, header: Header | None = None, encoding: str = "rgb8") -> Image:
    """Wrap a ``uint8 (H, W, 3)`` RGB array as a ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding {encoding!r} not supported here; use 'rgb8' or 'bgr8'")
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    h, w, _ = rgb.shape
    return Image(
        header=header or Header(),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(pixels).tobytes(),
    )


def rgb_to_compressed(rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg") -> CompressedImage:
    """Encode a ``uint8 (H, W, 3)`` RGB array as a JPEG or PNG ``sensor_msgs/CompressedImage``."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
    return CompressedImage(header=header or Header(), format=fmt, data=buf.getvalue())
