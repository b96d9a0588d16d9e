"""FastVLAPolicy: Gymnasium observations in, env-unit actions out, around a FastVLAModel.

The policy owns everything that is not the network: the observation map, preprocessing (through the
:class:`~fastvla.model.FastVLAProcessor`), device moves, un-normalisation and chunk execution (receding
horizon or temporal ensembling). The ``nn.Module`` stays pure (as LeRobot keeps ``ACTPolicy`` apart
from ``ACT``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastvla.constants import OBS_STATE, POLICY_CONFIG_FILE, TASK, depth_key, image_key
from fastvla.errors import NonFiniteError
from fastvla.model.quantization import is_quantized
from fastvla.policies.base import BasePolicy
from fastvla.policies.ensemble import ActionQueue, TemporalEnsembler
from fastvla.policies.observation_map import INFO as INFO_SOURCE
from fastvla.policies.observation_map import ObservationMap, lookup, read_instructions


class FastVLAPolicy(BasePolicy):
    """Acts in any Gymnasium env with a :class:`~fastvla.model.FastVLAModel`.

    Args:
        model: the network (moved to ``device``, put in eval mode).
        processor: its :class:`~fastvla.model.FastVLAProcessor` (with the dataset statistics).
        obs_map: how observations feed the model (default: FastVLA envs' ``pixels/<cam>``, ``agent_pos``).
        n_action_steps: actions executed per predicted chunk (default: the whole chunk).
        temporal_ensemble_coeff: if set, predict every step and average overlapping chunks (ACT);
            ``n_action_steps`` must then be 1 or None.
        device: where the model runs (default: CUDA if available, else CPU).
        resize_images: resize camera images of another size to the model's (False: raise instead).
        action_space: the env's action space, checked against the model's action size; Box bounds clip
            the actions.
        cuda_graphs: replay the chunk forward from CUDA graphs (one per batch size; instructions padded to
            the processor's ``max_instruction_tokens``). ``"auto"`` (default): on CUDA, falling back to eager
            with a warning if capture fails; ``True``: required; ``False``: eager.
        kernels: fused Triton kernels in the model (:func:`fastvla.kernels.apply_kernels`), including the
            fused NF4 dequantise-matmul for 4-bit models (1.4x faster chunk forward on an H100, see
            docs/performance.md). ``"auto"`` (default): on CUDA; ``True``: required; ``False``: off.

    Example:
        >>> import gymnasium as gym, fastvla.envs  # doctest: +SKIP
        >>> env = gym.make("fastvla/PickCube-v0")  # doctest: +SKIP
        >>> policy = FastVLAPolicy.from_pretrained("outputs/pick/final", n_action_steps=4)  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
        >>> policy.reset()  # doctest: +SKIP
        >>> obs, *_ = env.step(policy.select_action(obs, task=info["task"]))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        obs_map: ObservationMap | None = None,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff: float | None = None,
        device: str | torch.device | None = None,
        resize_images: bool = True,
        action_space: Any = None,
        cuda_graphs: bool | str = "auto",
        kernels: bool | str = "auto",
    ):
        config = model.config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model if is_quantized(model) else model.to(self.device)
        self.model.eval()
        self.processor = processor
        self.processor.resize_images = resize_images
        self.obs_map = obs_map or ObservationMap.for_fastvla_env(config.cameras, depth=config.use_depth)
        unknown = sorted(set(self.obs_map.cameras) - set(config.cameras))
        missing = [c for c in config.cameras if c not in self.obs_map.cameras]
        if missing or unknown:
            raise ValueError(
                f"ObservationMap cameras {sorted(self.obs_map.cameras)} do not match the model's cameras "
                f"{config.cameras} (missing: {missing}, unknown: {unknown})"
            )
        self.chunk_size, self.action_dim = config.chunk_size, config.action_dim
        if temporal_ensemble_coeff is not None and n_action_steps not in (None, 1):
            raise ValueError(
                "temporal ensembling predicts every step: n_action_steps must be 1 or None, "
                f"got {n_action_steps}"
            )
        n_action_steps = n_action_steps or (1 if temporal_ensemble_coeff is not None else self.chunk_size)
        if not 1 <= n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps={n_action_steps} must be in [1, chunk_size={self.chunk_size}]")
        self.n_action_steps = n_action_steps
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self._queue = ActionQueue(n_action_steps)
        self._ensembler = (
            TemporalEnsembler(temporal_ensemble_coeff, self.chunk_size)
            if temporal_ensemble_coeff is not None
            else None
        )
        self._low = self._high = None
        if action_space is not None:
            self.check_action_space(action_space)
        if cuda_graphs not in (True, False, "auto"):
            raise ValueError(f"cuda_graphs must be True, False or 'auto'; got {cuda_graphs!r}")
        if cuda_graphs is True and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device; the policy runs on {self.device}")
        self._graphs_required = cuda_graphs is True
        if kernels not in (True, False, "auto"):
            raise ValueError(f"kernels must be True, False or 'auto'; got {kernels!r}")
        if kernels is True and self.device.type != "cuda":
            raise ValueError(f"kernels=True needs a CUDA device (Triton); the policy runs on {self.device}")
        self.kernel_patch = None
        if kernels and self.device.type == "cuda":
            from fastvla.kernels import KernelConfig, apply_kernels

            self.kernel_patch = apply_kernels(self.model, KernelConfig(nf4_inference=True))
        self._graphed = None
        if cuda_graphs and self.device.type == "cuda":
            from fastvla.policies.graphed_forward import GraphedForward

            self._graphed = GraphedForward(lambda **inputs: self.model(**inputs).actions)

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        load_in_4bit: bool = False,
        device: str | torch.device | None = None,
        obs_map: ObservationMap | Mapping[str, Any] | None = None,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff: float | None = None,
        load_in_8bit: bool = False,
        dtype: torch.dtype | None = None,
        resize_images: bool = True,
        action_space: Any = None,
        cuda_graphs: bool | str = "auto",
        kernels: bool | str = "auto",
    ) -> FastVLAPolicy:
        """Load a policy from a folder holding a FastVLA model and processor (e.g. a training output).

        ``policy_config.json`` in the folder, if present, supplies defaults for ``obs_map``,
        ``n_action_steps`` and ``temporal_ensemble_coeff``; explicit arguments win.

        Args:
            path: the folder (``config.json``, ``model.safetensors``, ``processor_config.json``, stats,
                tokenizer).
            load_in_4bit: quantise vision tower and decoder to NF4 on load (bitsandbytes).
            device: where to run (default: CUDA if available, else CPU).
            obs_map: an :class:`ObservationMap` or its dict form.
            n_action_steps: receding-horizon length.
            temporal_ensemble_coeff: ACT temporal-ensembling coefficient (e.g. 0.01).
            load_in_8bit: LLM.int8() instead.
            dtype: weights dtype (default: bf16/fp16 on GPU, fp32 on CPU).
            resize_images: resize mismatched camera images (False: raise).
            action_space: the env's action space to check against.
            cuda_graphs: replay the forward from CUDA graphs (see the class docstring).
            kernels: fused Triton kernels (see the class docstring).
        """
        from fastvla.model import FastVLAModel, FastVLAProcessor, bnb_config, compute_dtype

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no FastVLA model (no config.json); pass a saved model folder"
            )
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or compute_dtype(device)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if load_in_4bit or load_in_8bit:
            kwargs["quantization_config"] = bnb_config(8 if load_in_8bit else 4, compute_dtype=dtype)
            kwargs["device_map"] = str(device)
        model = FastVLAModel.from_pretrained(path, **kwargs)
        processor = FastVLAProcessor.from_pretrained(path)
        saved = (
            json.loads((path / POLICY_CONFIG_FILE).read_text())
            if (path / POLICY_CONFIG_FILE).is_file()
            else {}
        )
        if obs_map is None and saved.get("obs_map"):
            obs_map = saved["obs_map"]
        if isinstance(obs_map, Mapping):
            obs_map = ObservationMap.from_dict(obs_map)
        if n_action_steps is None and temporal_ensemble_coeff is None:
            n_action_steps = saved.get("n_action_steps")
            temporal_ensemble_coeff = saved.get("temporal_ensemble_coeff")
        return cls(
            model,
            processor,
            obs_map=obs_map,
            n_action_steps=n_action_steps,
            temporal_ensemble_coeff=temporal_ensemble_coeff,
            device=device,
            resize_images=resize_images,
            action_space=action_space,
            cuda_graphs=cuda_graphs,
            kernels=kernels,
        )

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save model, processor and ``policy_config.json`` (observation map, chunk execution)."""
        from fastvla.utils.io import atomic_write_text

        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        config = {
            "obs_map": self.obs_map.to_dict(),
            "n_action_steps": None if self._ensembler else self.n_action_steps,
            "temporal_ensemble_coeff": self.temporal_ensemble_coeff,
        }
        atomic_write_text(path / POLICY_CONFIG_FILE, json.dumps(config, indent=2))

    def check_action_space(self, action_space: Any) -> None:
        """Raise if the env's action space does not have the model's action size; clip to Box bounds.

        Accepts a single-env space ``(A,)`` or a vector env's batched space ``(B, A)``.
        """
        shape = tuple(getattr(action_space, "shape", None) or ())
        if not shape or shape[-1] != self.action_dim:
            raise ValueError(
                f"the env's action space {action_space} has shape {shape} but the model predicts "
                f"{self.action_dim}-dimensional actions; train on data from this env's control mode"
            )
        if hasattr(action_space, "low") and hasattr(action_space, "high"):
            low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
            self._low, self._high = low.reshape(-1, self.action_dim)[0], high.reshape(-1, self.action_dim)[0]

    # ----------------------------------------------------------------------------------------- acting
    def reset(self) -> None:
        """Forget queued and ensembled actions (call at every episode start)."""
        self._queue.reset()
        if self._ensembler is not None:
            self._ensembler.reset()

    def _batch(self, obs: Mapping[str, Any], task: str | Sequence[str] | None) -> tuple[dict[str, Any], bool]:
        """Map an observation to a LeRobot-keyed batch (new arrays; ``obs`` is never modified)."""
        cfg = self.model.config
        batch: dict[str, Any] = {}
        single = None
        for cam in cfg.cameras:
            image = np.asarray(lookup(obs, self.obs_map.cameras[cam], f"camera {cam!r}"))
            if image.ndim not in (3, 4) or image.shape[-1] != 3:
                raise ValueError(
                    f"camera {cam!r} ({self.obs_map.cameras[cam]!r}) must be (H, W, 3) or (B, H, W, 3); "
                    f"got shape {image.shape}"
                )
            _check_finite(image, f"camera {cam!r} ({self.obs_map.cameras[cam]!r})")
            single = image.ndim == 3 if single is None else single
            if list(image.shape[-3:-1]) != list(cfg.image_size) and not self.processor.resize_images:
                raise ValueError(
                    f"camera {cam!r} images are {image.shape[-3:-1]} but the model was trained on "
                    f"{tuple(cfg.image_size)}; render at that size or load the policy with resize_images=True"
                )
            hwc = torch.from_numpy(np.array(image[None] if single else image))  # copy: (B, H, W, 3)
            batch[image_key(cam)] = hwc.permute(0, 3, 1, 2)  # (B, 3, H, W)
            if cfg.use_depth:
                depth_path = self.obs_map.depth.get(cam, f"depth/{cam}")
                d = np.asarray(lookup(obs, depth_path, f"depth of {cam!r}"))
                _check_finite(d, f"depth of {cam!r} ({depth_path!r})")
                batch[depth_key(cam)] = torch.from_numpy(np.array(d[None] if single else d, np.float32))
        size = 1 if single else batch[image_key(cfg.cameras[0])].shape[0]
        if self.obs_map.state is not None:
            state = np.asarray(lookup(obs, self.obs_map.state, "state"), np.float32)
            _check_finite(state, f"state {self.obs_map.state!r}")
            state = state.reshape(size, -1)
            if state.shape[-1] != cfg.state_dim:
                raise ValueError(
                    f"state {self.obs_map.state!r} has {state.shape[-1]} values but the model expects "
                    f"{cfg.state_dim}; map the right observation key"
                )
            batch[OBS_STATE] = torch.from_numpy(state.copy())
        batch[TASK] = self._tasks(task, size, obs)
        return batch, bool(single)

    def _tasks(self, task: str | Sequence[str] | None, size: int, obs: Mapping[str, Any]) -> list[str]:
        """The instructions: ``task`` if given, else the observation map's (a fixed one, or read from
        the observation); one read from ``info`` must come in ``task``."""
        source = self.obs_map.instruction
        if task is None and source is not None and source.startswith(INFO_SOURCE):
            key = source[len(INFO_SOURCE) :]
            raise ValueError(
                f"the observation map reads the instruction from {source!r}: pass "
                f"task=info[{key!r}] to select_action (fastvla.eval.evaluate does)"
            )
        if task is None and source is not None:
            return [t or "" for t in read_instructions(source, obs, {}, size)]
        if task is None:
            raise ValueError(
                "no instruction: pass task=info['task'] to select_action or set "
                "ObservationMap(instruction='info:KEY' | 'obs:PATH' | 'a fixed instruction')"
            )
        if isinstance(task, str):
            return [task] * size
        tasks = [str(t) for t in np.asarray(task, dtype=object).reshape(-1)]
        if len(tasks) != size:
            raise ValueError(f"got {len(tasks)} instructions for a batch of {size} observations")
        return tasks

    @torch.inference_mode()
    def _predict(self, batch: dict[str, Any]) -> np.ndarray:
        inputs = self.processor(batch, device=self.device)
        actions = self._forward(inputs).float().cpu().numpy()  # (B, T, A) normalised
        actions = self.processor.unnormalize_actions(actions)
        if not np.isfinite(actions).all():  # the observation was checked: the model itself is broken
            raise NonFiniteError(
                "the model predicted NaN/inf actions for a finite observation; its weights (or the action "
                "statistics) are probably non-finite, as after a diverged training run: load another "
                "checkpoint"
            )
        if self._low is not None:
            actions = np.clip(actions, self._low, self._high)
        return actions.astype(np.float32)

    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._graphed is None:
            return self.model(**inputs).actions
        inputs = self.processor.pad_instructions(inputs)
        try:
            return self._graphed(**inputs)
        except Exception as err:
            if self._graphs_required:
                raise
            warnings.warn(
                f"CUDA-graph capture of the policy forward failed ({type(err).__name__}: {err}); "
                "running eagerly (pass cuda_graphs=False to skip the attempt)",
                stacklevel=3,
            )
            self._graphed = None
            return self.model(**inputs).actions

    def predict_action_chunk(
        self, obs: Mapping[str, Any], task: str | Sequence[str] | None = None
    ) -> np.ndarray:
        """The whole predicted chunk in env units: (T, A) for one observation, (B, T, A) for a batch.

        Does not touch the action queue or ensembler.
        """
        batch, single = self._batch(obs, task)
        chunk = self._predict(batch)
        return chunk[0] if single else chunk

    def select_action(self, obs: Mapping[str, Any], task: str | Sequence[str] | None = None) -> np.ndarray:
        """Next action in env units: (A,) for one observation, (B, A) for a vector-env batch.

        Re-plans when the queue of ``n_action_steps`` actions is empty, or every step with temporal
        ensembling.
        """
        batch, single = self._batch(obs, task)
        if self._ensembler is not None:
            action = self._ensembler.update(self._predict(batch))
        else:
            if self._queue.empty():
                self._queue.push(self._predict(batch))
            action = self._queue.pop()
            if action.shape[0] != batch[TASK].__len__():
                raise ValueError(
                    f"batch size changed from {action.shape[0]} to {len(batch[TASK])} without reset(); "
                    "call policy.reset() when the number of envs changes"
                )
        return action[0] if single else action


def _check_finite(values: np.ndarray, what: str) -> None:
    """Raise if a float observation holds NaN or inf (integer images cannot): one pass over the array."""
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise ValueError(
            f"{what} holds NaN or inf values; the policy needs finite observations (check the sensor or "
            "the env, e.g. with np.isfinite)"
        )
