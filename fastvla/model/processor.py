"""FastVLAProcessor: batch dicts (LeRobot keys) -> model inputs, and model actions -> env units.

It owns the tokenizer (instruction prompt), the image preprocessing of the vision backbone (resize and
mean/std normalisation) and a :class:`fastvla.normalize.Normalizer` for state and actions. It is saved next
to the model: ``processor_config.json``, ``dataset_stats.json`` and the tokenizer files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import HfApi
from transformers import AutoTokenizer

from fastvla.constants import (
    ACTION,
    ACTION_IS_PAD,
    AUX_GOAL,
    DATASET_STATS_FILE,
    OBS_STATE,
    TASK,
    depth_key,
    image_key,
)
from fastvla.model.presets import get_preset, preset_config
from fastvla.normalize import Normalizer
from fastvla.utils.image import as_hw
from fastvla.utils.io import atomic_write_text

PROCESSOR_CONFIG_FILE = "processor_config.json"
DEFAULT_MODES = {OBS_STATE: "mean_std", ACTION: "min_max"}
#: Smallest std / half-range used for normalisation, so constant features do not blow up to 1e8.
MIN_SCALE = 1e-3


def _sanitize_stats(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Copy of ``stats`` with std and ranges floored at :data:`MIN_SCALE` (constant features map to 0)."""
    out: dict[str, dict[str, Any]] = {}
    for key, d in stats.items():
        d = {k: np.asarray(v, np.float64) for k, v in d.items()}
        if "std" in d:
            d["std"] = np.maximum(d["std"], MIN_SCALE)
        for lo, hi in (("min", "max"), ("q01", "q99")):
            if lo in d and hi in d:
                mid, half = (d[lo] + d[hi]) / 2, np.maximum((d[hi] - d[lo]) / 2, MIN_SCALE)
                d[lo], d[hi] = mid - half, mid + half
        out[key] = {k: v.tolist() for k, v in d.items()}
    return out


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


class FastVLAProcessor:
    """Prepares model inputs from batches keyed like a LeRobot dataset item.

    Args:
        tokenizer: a transformers tokenizer (its pad token is used for batching).
        cameras: the model's camera names, in its order; images come from ``observation.images.<camera>``.
        image_size: (H, W) the vision tower expects.
        image_mean: per-channel mean for pixels in [0, 1].
        image_std: per-channel std.
        normalizer: state/action normaliser (None: leave them unchanged).
        max_instruction_tokens: instructions are truncated to this many tokens.
        prompt_template: how the instruction is written, with ``{task}`` replaced.
        resize_images: resize images of another size (False: raise instead).
        use_depth: also read ``observation.depth.<cam>``.

    Example:
        >>> proc = FastVLAProcessor.from_preset("tiny")
        >>> inputs = proc({"observation.images.front": torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
        ...                "observation.images.wrist": torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
        ...                "observation.state": torch.zeros(2, 8), "task": ["pick the red cube"] * 2})
        >>> inputs["pixel_values"].shape
        torch.Size([2, 2, 3, 64, 64])
    """

    def __init__(
        self,
        tokenizer: Any,
        cameras: Sequence[str],
        image_size: Sequence[int] | int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        normalizer: Normalizer | None = None,
        max_instruction_tokens: int = 32,
        prompt_template: str = "{task}",
        resize_images: bool = True,
        use_depth: bool = False,
    ):
        if "{task}" not in prompt_template:
            raise ValueError(f"prompt_template {prompt_template!r} must contain '{{task}}'")
        self.tokenizer = tokenizer
        self.cameras = list(cameras)
        self.image_size = as_hw(image_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.normalizer = normalizer
        self.max_instruction_tokens = int(max_instruction_tokens)
        self.prompt_template = prompt_template
        self.resize_images = resize_images
        self.use_depth = use_depth

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_model_config(
        cls,
        config: Any,
        tokenizer: Any,
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        modes: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> FastVLAProcessor:
        """Processor matching a :class:`FastVLAConfig` (cameras, image size, depth, instruction length)."""
        proc = cls(
            tokenizer,
            cameras=config.cameras,
            image_size=config.image_size,
            max_instruction_tokens=config.max_instruction_tokens,
            use_depth=config.use_depth,
            **kwargs,
        )
        if stats is not None:
            proc.set_stats(stats, modes)
        return proc

    @classmethod
    def from_preset(
        cls,
        name: str,
        config: Any = None,
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        modes: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> FastVLAProcessor:
        """Processor of a preset (local tokenizer, the tower's pixel statistics).

        Args:
            name: preset name.
            config: the model config if preset fields were overridden (default: the preset's own).
            stats: dataset statistics for state/action normalisation.
            modes: normalisation mode per key (default :data:`DEFAULT_MODES`: state ``mean_std``,
                action ``min_max``).
            **kwargs: other constructor arguments.
        """
        preset = get_preset(name)
        config = config if config is not None else preset_config(name)
        kwargs.setdefault("image_mean", preset.image_mean)
        kwargs.setdefault("image_std", preset.image_std)
        return cls.from_model_config(config, preset.tokenizer(), stats=stats, modes=modes, **kwargs)

    def set_stats(
        self, stats: Mapping[str, Mapping[str, Any]], modes: Mapping[str, str] | None = None
    ) -> None:
        """Use dataset statistics (LeRobot layout) for state and action normalisation."""
        modes = dict(modes if modes is not None else DEFAULT_MODES)
        modes = {k: m for k, m in modes.items() if k in stats or m == "identity"}
        self.normalizer = Normalizer(_sanitize_stats(stats), modes)

    # -------------------------------------------------------------------------------------- transforms
    def _images(self, batch: Mapping[str, Any], key_fn: Any, channels: int) -> tuple[torch.Tensor, bool]:
        """Cameras of ``batch`` stacked as (B, cams, channels, H, W) float, and whether it was unbatched."""
        frames, single = [], False
        for cam in self.cameras:
            key = key_fn(cam)
            if key not in batch:
                available = sorted(k for k in batch if k.startswith("observation."))
                raise KeyError(f"camera {cam!r} missing: no {key!r} in batch; available: {available}")
            x = _as_tensor(batch[key])
            if channels == 1 and x.dim() in (2, 3) and (x.dim() == 2 or x.shape[0] != 1):
                x = x.unsqueeze(-3)  # (B, H, W) or (H, W) depth -> channel axis
            if x.dim() == 3:
                x, single = x.unsqueeze(0), True
            if x.shape[-3] != channels and x.shape[-1] == channels:
                x = x.permute(0, 3, 1, 2)  # channels-last (B, H, W, C) -> (B, C, H, W)
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f"{key!r} must be (B, {channels}, H, W); got shape {tuple(x.shape)}")
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            if tuple(x.shape[-2:]) != self.image_size:
                if not self.resize_images:
                    raise ValueError(
                        f"{key!r} is {tuple(x.shape[-2:])} but the model expects {self.image_size}; "
                        "resize the images or construct the processor with resize_images=True"
                    )
                mode = {"mode": "bilinear", "antialias": True} if channels == 3 else {"mode": "nearest"}
                x = F.interpolate(x, size=self.image_size, **mode)
            frames.append(x)
        return torch.stack(frames, dim=1), single  # (B, cams, C, H, W)

    def preprocess_images(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Normalised pixel values (B, cams, 3, H, W) from uint8 [0, 255] or float [0, 1] images."""
        pixels, _ = self._images(batch, image_key, 3)
        mean = torch.tensor(self.image_mean).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 1, 3, 1, 1)
        return (pixels - mean) / std

    def tokenize(self, tasks: str | Sequence[str], batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (B, L) of the instructions, padded to the longest."""
        if isinstance(tasks, str):
            tasks = [tasks] * (batch_size or 1)
        tasks = list(tasks)
        if batch_size is not None and len(tasks) != batch_size:
            raise ValueError(f"got {len(tasks)} instructions for a batch of {batch_size}")
        prompts = [self.prompt_template.format(task=t) for t in tasks]
        enc = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_instruction_tokens,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def pad_instructions(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``inputs`` with the instructions right-padded to ``max_instruction_tokens`` (see :func:`pad_text`):
        the fixed shapes CUDA graphs need, same model output."""
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        return pad_text(inputs, self.max_instruction_tokens, pad_id)

    def normalize_state(self, state: Any) -> torch.Tensor:
        """Normalised state as a float tensor."""
        state = _as_tensor(state).float()
        return self.normalizer.normalize(OBS_STATE, state) if self.normalizer else state

    def normalize_aux_goal(self, goal: Any) -> torch.Tensor:
        """A state difference (the hindsight goal) divided by the state's std (a difference has no offset).

        Left unchanged without statistics, or with state statistics that have no ``std``.
        """
        goal = _as_tensor(goal).float()
        stats = self.normalizer.stats.get(OBS_STATE, {}) if self.normalizer else {}
        if "std" not in stats:
            return goal
        return goal / torch.as_tensor(stats["std"], dtype=goal.dtype, device=goal.device)

    def normalize_actions(self, actions: Any) -> torch.Tensor:
        """Actions in env units -> model units."""
        actions = _as_tensor(actions).float()
        return self.normalizer.normalize(ACTION, actions) if self.normalizer else actions

    def unnormalize_actions(self, actions: Any) -> Any:
        """Model outputs (normalised units, any leading shape) -> env units; numpy in, numpy out."""
        if self.normalizer is None:
            return actions
        if isinstance(actions, np.ndarray):
            return self.normalizer.unnormalize(ACTION, actions.astype(np.float64)).astype(np.float32)
        return self.normalizer.unnormalize(ACTION, actions.float())

    def __call__(
        self, batch: Mapping[str, Any], device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs from a batch (or a single sample) keyed like a LeRobot item.

        Reads ``observation.images.<cam>`` (uint8 or float, (B, 3, H, W) or (3, H, W)), ``observation.state``,
        ``task`` (a string or one per sample; default empty), and when present ``action``/``action_is_pad``,
        ``aux_goal`` (training) and ``observation.depth.<cam>``. Never modifies ``batch``.

        Returns:
            ``pixel_values`` (B, cams, 3, H, W), ``input_ids``/``attention_mask`` (B, L), ``state`` (B, S),
            and
            ``actions`` (B, T, A), ``action_is_pad`` (B, T), ``depth`` (B, cams, 1, H, W), ``aux_goal``
            (B, S) divided by the state's std (:meth:`normalize_aux_goal`) when available.
        """
        pixels = self.preprocess_images(batch)
        b = pixels.shape[0]
        out = {"pixel_values": pixels, **self.tokenize(batch.get(TASK, ""), batch_size=b)}
        if OBS_STATE in batch:
            state = self.normalize_state(batch[OBS_STATE])
            out["state"] = state.reshape(b, -1)
        if self.use_depth:
            out["depth"], _ = self._images(batch, depth_key, 1)
        if ACTION in batch:
            actions = self.normalize_actions(batch[ACTION])
            out["actions"] = actions if actions.dim() == 3 else actions.reshape(b, -1, actions.shape[-1])
            if ACTION_IS_PAD in batch:
                out["action_is_pad"] = _as_tensor(batch[ACTION_IS_PAD]).bool().reshape(b, -1)
        if AUX_GOAL in batch:
            out["aux_goal"] = self.normalize_aux_goal(batch[AUX_GOAL]).reshape(b, -1)
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out

    # ----------------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (not the tokenizer or statistics)."""
        return {
            "processor_class": type(self).__name__,
            "cameras": self.cameras,
            "image_size": list(self.image_size),
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "max_instruction_tokens": self.max_instruction_tokens,
            "prompt_template": self.prompt_template,
            "resize_images": self.resize_images,
            "use_depth": self.use_depth,
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``processor_config.json``, ``dataset_stats.json`` (if any) and the tokenizer files."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / PROCESSOR_CONFIG_FILE, json.dumps(self.to_dict(), indent=2))
        if self.normalizer is not None:
            self.normalizer.save(str(path / DATASET_STATS_FILE))
        self.tokenizer.save_pretrained(str(path))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> Any:
        """Upload the processor files to a Hub model repo (next to ``model.push_to_hub(repo_id)``)."""
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fastvla-processor-") as tmp:
            self.save_pretrained(tmp)
            return api.upload_folder(
                repo_id=repo_id, folder_path=tmp, commit_message="Upload FastVLAProcessor"
            )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> FastVLAProcessor:
        """Load a processor saved with :meth:`save_pretrained` (local folder)."""
        path = Path(path)
        config_file = path / PROCESSOR_CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(
                f"no {PROCESSOR_CONFIG_FILE} in {path}; save one with processor.save_pretrained(dir)"
            )
        settings = json.loads(config_file.read_text())
        settings.pop("processor_class", None)
        if "camera_names" in settings:  # saved before the rename
            settings["cameras"] = settings.pop("camera_names")
        settings.update(overrides)
        stats_file = path / DATASET_STATS_FILE
        normalizer = Normalizer.load(str(stats_file)) if stats_file.is_file() else None
        return cls(AutoTokenizer.from_pretrained(str(path)), normalizer=normalizer, **settings)


def pad_text(inputs: Mapping[str, torch.Tensor], length: int, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """``inputs`` with ``input_ids``/``attention_mask`` right-padded to ``length`` tokens.

    Fixed shapes for CUDA graphs (training and inference). FastVLA positions skip padding, so the model's
    output does not change.

    Args:
        inputs: model inputs; other keys pass through unchanged.
        length: the target number of instruction tokens (the processor's ``max_instruction_tokens``).
        pad_id: token id written into the padding (masked out, so any id works).

    Raises:
        ValueError: the instructions are longer than ``length``.
    """
    out = dict(inputs)
    if "input_ids" not in inputs:
        return out
    have = inputs["input_ids"].shape[-1]
    if have > length:
        raise ValueError(
            f"instructions have {have} tokens, more than the fixed length {length} of the CUDA-graph "
            "buffers; raise the processor's max_instruction_tokens, or turn CUDA graphs off"
        )
    if have == length:
        return out
    extra = length - have
    out["input_ids"] = torch.nn.functional.pad(inputs["input_ids"], (0, extra), value=pad_id)
    if "attention_mask" in inputs:
        out["attention_mask"] = torch.nn.functional.pad(inputs["attention_mask"], (0, extra), value=0)
    else:
        mask = torch.ones_like(inputs["input_ids"])
        out["attention_mask"] = torch.nn.functional.pad(mask, (0, extra), value=0)
    return out
