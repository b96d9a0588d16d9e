"""Feature specs (``meta/info.json`` "features") and validation of frames against them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fastvla.constants import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK, TASK_INDEX, TIMESTAMP
from fastvla.datasets.video import CODEC_INFO_NAME

# Features every LeRobot dataset carries, filled in by the writer (lerobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    TIMESTAMP: {"dtype": "float32", "shape": [1], "names": None},
    FRAME_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    EPISODE_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    INDEX: {"dtype": "int64", "shape": [1], "names": None},
    TASK_INDEX: {"dtype": "int64", "shape": [1], "names": None},
}
CAMERA_DTYPES = ("video", "image")
_NUMERIC_KINDS = {"f": "floating", "i": "integer", "u": "integer", "b": "bool"}


class FrameValidationError(ValueError):
    """A frame passed to the writer does not match the dataset's features."""


def video_info(height: int, width: int, fps: int, codec: str) -> dict[str, Any]:
    """The ``info`` block lerobot 0.6 writes for a video feature."""
    from fastvla.datasets.video import CODECS

    options = CODECS[codec][1]
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": CODEC_INFO_NAME[codec],
        "video.pix_fmt": "yuv420p",
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
        "video.g": int(options["g"]),
        "video.crf": int(options["crf"]),
        "video.preset": options["preset"] if not options["preset"].isdigit() else int(options["preset"]),
        "video.fast_decode": 0,
        "video.video_backend": "pyav",
        "video.extra_options": {},
        "is_depth_map": False,
    }


def normalize_features(
    features: Mapping[str, Mapping[str, Any]], fps: int, codec: str, use_videos: bool = True
) -> dict[str, dict[str, Any]]:
    """User features (cameras and numeric vectors) completed to what goes into ``info.json``.

    Camera features may give ``dtype`` "video", "image" or "uint8"/"rgb" (stored as video when
    ``use_videos`` else PNG images); their shape is ``(H, W, 3)``. Default index features are appended.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, spec in features.items():
        if key in DEFAULT_FEATURES:
            continue
        if "dtype" not in spec or "shape" not in spec:
            raise ValueError(f"feature {key!r} needs 'dtype' and 'shape'; got {dict(spec)}")
        dtype, shape = str(spec["dtype"]), [int(s) for s in spec["shape"]]
        if dtype in (*CAMERA_DTYPES, "rgb"):
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"camera feature {key!r} needs shape (H, W, 3); got {shape}")
            dtype = "video" if use_videos and dtype != "image" else "image"
            entry: dict[str, Any] = {
                "dtype": dtype,
                "shape": shape,
                "names": list(spec.get("names") or ["height", "width", "channels"]),
            }
            if dtype == "video":
                entry["info"] = video_info(shape[0], shape[1], fps, codec)
            out[key] = entry
        else:
            try:
                np.dtype(dtype)
            except TypeError as err:
                raise ValueError(
                    f"feature {key!r} has unknown dtype {dtype!r}; use a numpy dtype such as 'float32', "
                    "or 'video' / 'image' for cameras"
                ) from err
            out[key] = {"dtype": dtype, "shape": shape, "names": spec.get("names")}
    for key, spec in DEFAULT_FEATURES.items():
        out[key] = dict(spec)
    return out


def user_keys(features: Mapping[str, Any]) -> list[str]:
    """Feature keys a frame must provide (everything except the default index features)."""
    return [k for k in features if k not in DEFAULT_FEATURES]


def validate_frame(frame: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Check a frame against the features and return it converted to stored dtypes.

    Camera values may be uint8 ``(H, W, 3)`` or ``(3, H, W)``, or float in [0, 1]; numeric values must
    have the feature's shape and a compatible kind (float / integer / bool).

    Raises:
        FrameValidationError: naming every problem at once.
    """
    expected = user_keys(features)
    given = [k for k in frame if k != TASK]
    errors = []
    missing = [k for k in expected if k not in frame]
    extra = [k for k in given if k not in expected]
    if missing:
        errors.append(f"missing features {missing}")
    if extra:
        errors.append(f"unknown features {extra} (the dataset has {expected})")
    out: dict[str, Any] = {}
    for key in expected:
        if key not in frame:
            continue
        spec = features[key]
        try:
            out[key] = _convert(key, frame[key], spec)
        except FrameValidationError as err:
            errors.append(str(err))
    if errors:
        raise FrameValidationError(
            "frame does not match the dataset features: " + "; ".join(errors) + ". Fix the frame (or create "
            "the dataset with matching features); nothing was written."
        )
    return out


def _convert(key: str, value: Any, spec: Mapping[str, Any]) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    shape = tuple(spec["shape"])
    if spec["dtype"] in CAMERA_DTYPES:
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
        if arr.shape != shape:
            raise FrameValidationError(f"{key!r} has shape {arr.shape}, expected {shape} (H, W, 3)")
        if arr.dtype.kind == "f":
            arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise FrameValidationError(f"{key!r} has dtype {arr.dtype}, expected uint8 or float in [0, 1]")
        return arr
    if arr.shape != shape and not (shape == (1,) and arr.shape == ()):
        raise FrameValidationError(f"{key!r} has shape {arr.shape}, expected {shape}")
    target = np.dtype(spec["dtype"])
    kind, want = _NUMERIC_KINDS.get(arr.dtype.kind), _NUMERIC_KINDS.get(target.kind)
    if kind is None or (kind != want and not (want == "floating" and kind == "integer")):
        raise FrameValidationError(f"{key!r} has dtype {arr.dtype}, expected {target} ({want})")
    return arr.astype(target).reshape(shape)
