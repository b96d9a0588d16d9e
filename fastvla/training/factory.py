"""Glue between the training loop and the rest of FastVLA: accelerator, model + processor, guards, export.

Kept apart from :mod:`fastvla.training.loop` so the loop reads as the algorithm and this module holds the
plumbing (device and precision choice, quantisation checks, LoRA, OOM advice, the policy folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from fastvla.constants import POLICY_CONFIG_FILE
from fastvla.model import FastVLAConfig, FastVLAModel, FastVLAProcessor, bnb_config, set_checkpointed_layers
from fastvla.model.parallel import tensor_parallel_vision
from fastvla.model.quantization import guard_cpu_4bit
from fastvla.training.config import ModelConfig, TrainConfig, graph_incompatibility
from fastvla.training.offload import offload_note
from fastvla.utils.image import as_hw
from fastvla.utils.io import atomic_directory

# ------------------------------------------------------------------------------------------ accelerator


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; an explicit CUDA request is checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def resolve_mixed_precision(mode: str, device: str) -> str:
    """``auto`` -> bf16 on GPUs with bf16, fp16 (with loss scaling) on older GPUs (T4), none on CPU."""
    if mode == "auto":
        if device != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "fp16" and device != "cuda":
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU; on CPU use bf16 or no")
    return mode


def make_accelerator(cfg: TrainConfig) -> Any:
    """The run's ``accelerate.Accelerator`` (DDP settings, precision, CPU threads per process)."""
    from accelerate import Accelerator  # deferred: start-up time (accelerate)
    from accelerate.utils import DistributedDataParallelKwargs  # deferred: start-up time (accelerate)

    device = resolve_device(cfg.device)
    _forget_previous_accelerator()
    acc = Accelerator(
        cpu=device == "cpu",
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision, device),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=cfg.ddp_find_unused_parameters)
        ],
        step_scheduler_with_optimizer=False,
    )
    if device == "cpu" and acc.num_processes > 1:
        # Several processes on one CPU: split the cores instead of oversubscribing them.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // local))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    from accelerate.utils import set_seed  # deferred: start-up time (accelerate)

    set_seed(cfg.seed)
    return acc


def _forget_previous_accelerator() -> None:
    """Let a second Trainer in the same process use other precision settings.

    Accelerate keeps one process-wide state and refuses a new ``Accelerator`` whose ``mixed_precision``
    differs from the first one's (e.g. a bf16 run, then an fp16 run in one notebook or test session). The
    distributed part of the state (process group, device) is kept.
    """
    from accelerate.state import AcceleratorState  # deferred: start-up time (accelerate)

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)


# ------------------------------------------------------------------------------------ model + processor


def check_bitsandbytes(bits: int, device: torch.device) -> None:
    """Run one tiny quantised layer on ``device``; raise a clear error if bitsandbytes cannot.

    Raises:
        RuntimeError: bitsandbytes is missing or has no kernels for this device.
    """
    try:
        import bitsandbytes as bnb  # deferred: optional dependency (bitsandbytes; loads its native library)

        with torch.no_grad():
            if bits == 4:
                layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32).to(device)
            else:
                layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False).to(device)
            layer(torch.zeros(1, 64, device=device))
    except Exception as err:
        raise RuntimeError(
            f"--model.quantization {bits}bit needs bitsandbytes kernels for {device.type}, which failed here "
            f"({type(err).__name__}: {err}). Install a bitsandbytes build for this device "
            "(`pip install -U bitsandbytes`), train on a supported GPU, or use --model.quantization none"
        ) from err


def _shape_overrides(cfg: TrainConfig, spec: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "cameras": list(spec.cameras),
        "state_dim": spec.state_dim,
        "action_dim": spec.action_dim,
        "chunk_size": cfg.data.chunk_size,
        "use_depth": bool(cfg.data.depth),
        "aux_goal_weight": cfg.model.aux_goal_weight,  # a training choice, but the head is the model's
    }
    if cfg.data.image_size:
        fields["image_size"] = as_hw(cfg.data.image_size)
    return fields


def _check_checkpoint_fits(model_config: Any, spec: Any, cfg: TrainConfig, source: str) -> None:
    problems = []
    if model_config.action_dim != spec.action_dim:
        problems.append(f"action_dim {model_config.action_dim} (dataset: {spec.action_dim})")
    if model_config.state_dim != spec.state_dim:
        problems.append(f"state_dim {model_config.state_dim} (dataset: {spec.state_dim})")
    if model_config.chunk_size != cfg.data.chunk_size:
        problems.append(f"chunk_size {model_config.chunk_size} (--data.chunk-size {cfg.data.chunk_size})")
    if list(model_config.cameras) != list(spec.cameras):
        problems.append(f"cameras {list(model_config.cameras)} (--data.cameras: {spec.cameras})")
    if bool(model_config.use_depth) != bool(cfg.data.depth):
        problems.append(f"use_depth={model_config.use_depth} (--data.depth {cfg.data.depth})")
    if problems:
        raise ValueError(
            f"model checkpoint {source} does not match this dataset/config: it has {'; '.join(problems)}. "
            "Pick the matching --data.cameras/--data.chunk-size, or start from a preset or backbones instead"
        )


def build_model(cfg: TrainConfig, spec: Any, device: torch.device) -> tuple[nn.Module, Any]:
    """The model to train (quantised / LoRA-wrapped as configured) and its processor (with dataset stats).

    Raises:
        ValueError: a checkpoint whose action/state dims, chunk size or cameras differ from the data.
        RuntimeError: quantisation requested where bitsandbytes cannot run.
    """

    mc = cfg.model
    attn = None if mc.attn_implementation == "auto" else mc.attn_implementation
    quant = None
    if mc.quantization != "none":
        bits = 4 if mc.quantization == "4bit" else 8
        check_bitsandbytes(bits, device)
        quant = bnb_config(bits=bits, compute_dtype=_compute_dtype(cfg, device))
    if mc.checkpoint:
        _check_checkpoint_fits(FastVLAConfig.from_pretrained(mc.checkpoint), spec, cfg, mc.checkpoint)
        model = FastVLAModel.from_pretrained(
            mc.checkpoint,
            quantization_config=quant,
            device_map=str(device),
            attn_implementation=attn,
            aux_goal_weight=mc.aux_goal_weight,  # a new head starts from its initialisation
        )
        processor = FastVLAProcessor.from_pretrained(mc.checkpoint)
    elif mc.vision_backbone:
        model = FastVLAModel.from_backbones(
            mc.vision_backbone,
            mc.text_backbone,
            device=device,
            attn_implementation=attn,
            **_shape_overrides(cfg, spec),
        )
        model = _quantize_in_memory(model, quant, device) if quant is not None else model
        processor = _backbone_processor(model.config, mc)
    else:
        fields = {**_shape_overrides(cfg, spec), **mc.overrides}
        model = FastVLAModel.from_preset(
            mc.preset, device=device, quantization_config=quant, attn_implementation=attn, **fields
        )
        processor = FastVLAProcessor.from_preset(mc.preset, config=model.config)
    processor.set_stats(spec.stats)
    if mc.gradient_checkpointing:
        # Saving the RNG state would sync with the host inside a CUDA-graph capture; it is only needed
        # for dropout inside checkpointed layers, which graph mode rules out (config.graph_incompatibility).
        preserve_rng = not use_cuda_graphs(cfg, device)[0]
        kwargs = {"use_reentrant": False, "preserve_rng_state": preserve_rng}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if mc.gradient_checkpointing_layers:
            set_checkpointed_layers(model, mc.gradient_checkpointing_layers)
    if mc.use_lora:
        model = apply_lora(model, mc, cfg.optim.head_modules)
    elif quant is not None:
        raise ValueError("a quantised model can only be trained with LoRA adapters: drop --model.lora off")
    model = model.to(device) if quant is None else model
    if use_kernels(cfg, device):
        # deferred: start-up time (Triton), and only when kernels are on
        from fastvla.kernels import apply_kernels

        apply_kernels(model)
    return model, processor


def use_kernels(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the fused Triton kernels go into the model (``model.kernels``; auto = on CUDA).

    Raises:
        ValueError: ``on`` where Triton cannot run (no CUDA device).
    """
    mode = cfg.model.kernels
    if mode == "on" and device.type != "cuda":
        raise ValueError(
            f"--model.kernels on needs a CUDA GPU (Triton kernels); this run is on {device.type}. "
            "Use --model.kernels auto or off"
        )
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def use_cuda_graphs(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """``(attempt, required)``: whether to capture updates in CUDA graphs, and whether failing is an error.

    Raises:
        ValueError: ``--cuda-graphs on`` for a run that cannot be captured (the message names the fix).
    """

    if cfg.cuda_graphs == "off":
        return False, False
    problem = graph_incompatibility(cfg)
    if problem is None and device.type != "cuda":
        problem = (
            f"CUDA graphs need a CUDA GPU; this run is on {device.type}. Use --cuda-graphs off (or auto)"
        )
    if problem is not None:
        if cfg.cuda_graphs == "on":
            raise ValueError(f"--cuda-graphs on: {problem}")
        return False, False
    return True, cfg.cuda_graphs == "on"


def resolve_offload(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool, str | None]:
    """``(offload optimizer, offload activations, note)``: the memory options in effect on ``device``.

    Both mean something only where the model lives in GPU memory; on CPU they are left off and the note
    (printed by the trainer) says so.
    """

    mem = cfg.memory
    on_gpu = device.type == "cuda"
    note = offload_note(device, mem.offload_optimizer, mem.offload_activations)
    return mem.offload_optimizer and on_gpu, mem.offload_activations and on_gpu, note


def setup_vision_tensor_parallel(cfg: TrainConfig, model: nn.Module, acc: Any) -> Any:
    """Shard the vision tower over groups of ``--parallel.tensor-parallel-vision`` processes; mesh or None.

    The processes form a (data parallel x tensor parallel) mesh; each group encodes its ranks' images
    together (:class:`fastvla.model.parallel.GroupBatchTower`). The sharded weights are left out of DDP.

    Raises:
        ValueError: a setup it does not compose with (the message names the fix).
    """
    n = cfg.parallel.tensor_parallel_vision
    if n == 1:
        return None
    world = acc.num_processes
    flag = f"--parallel.tensor-parallel-vision {n}"
    if world % n or world < n:
        raise ValueError(
            f"{flag} needs a multiple of {n} processes; this run has {world} "
            f"(accelerate launch --num_processes {n} ...)"
        )
    if cfg.eval_every:
        raise ValueError(
            f"{flag}: the closed-loop eval hook runs on one process, the sharded tower needs all; "
            "use --eval-every 0"
        )
    tower = (model.get_base_model() if hasattr(model, "get_base_model") else model).vision.tower
    if any(p.requires_grad for p in tower.parameters()):
        raise ValueError(
            f"{flag} shards a frozen vision tower; this one trains. Train LoRA on the decoder only "
            "(--model.lora on --model.no-lora-vision, or a backbone/checkpoint with --model.no-lora-vision)"
        )

    mesh = init_device_mesh(acc.device.type, (world // n, n), mesh_dim_names=("dp", "tp"))
    tensor_parallel_vision(model, mesh["tp"])
    # DDP would broadcast and all-reduce every parameter: the shards differ by rank and are frozen.
    model._ddp_params_and_buffers_to_ignore = [
        k for k, p in model.named_parameters() if isinstance(p, DTensor)
    ]
    return mesh


def _compute_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    mode = resolve_mixed_precision(cfg.mixed_precision, device.type)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)


def _quantize_in_memory(model: nn.Module, quant: Any, device: torch.device) -> nn.Module:
    """Quantise a model built from backbones by saving it and reloading it through bitsandbytes."""

    with tempfile.TemporaryDirectory(prefix="fastvla-quant-") as tmp:
        model.save_pretrained(tmp)
        del model
        return FastVLAModel.from_pretrained(tmp, quantization_config=quant, device_map=str(device))


def _backbone_processor(config: Any, mc: ModelConfig) -> Any:
    # deferred: start-up time (transformers' auto classes import every model's processor)
    from transformers import AutoImageProcessor, AutoTokenizer

    kwargs: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # towers without an image processor keep the defaults
        image_proc = AutoImageProcessor.from_pretrained(mc.vision_backbone)
        kwargs = {"image_mean": image_proc.image_mean, "image_std": image_proc.image_std}
    tokenizer = AutoTokenizer.from_pretrained(mc.text_backbone)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return FastVLAProcessor.from_model_config(config, tokenizer, **kwargs)


def apply_lora(model: nn.Module, mc: ModelConfig, head_modules: tuple[str, ...]) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (:meth:`fastvla.model.FastVLAModel.get_peft_model`).

    The fresh modules named by ``head_modules`` are trained in full (PEFT ``modules_to_save``).
    """

    return FastVLAModel.get_peft_model(
        model,
        r=mc.lora_r,
        lora_alpha=mc.lora_alpha,
        lora_dropout=mc.lora_dropout,
        target_vision=mc.lora_vision,
        target_language=mc.lora_language,
        attention=mc.lora_attention,
        mlp=mc.lora_mlp,
        target_modules=tuple(mc.lora_extra_targets),
        modules_to_save=tuple(head_modules),
    )


def model_inputs(processor: Any, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Model inputs of a DataLoader batch (uint8 images -> normalised floats), on ``device``."""
    return processor(batch, device=device)


def guard_quantized_eval(model: nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights in eval mode on CPU (which corrupts later gradients)."""
    if sys.modules.get("bitsandbytes") is None:  # nothing can be quantised; skip the slow, noisy import
        return

    guard_cpu_4bit(model)


# ------------------------------------------------------------------------------------------------- OOM


@contextlib.contextmanager
def oom_advice(cfg: TrainConfig) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into one that says which knob to turn."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        knobs = [
            f"--batch-size {max(1, cfg.batch_size // 2)} with --grad-accum-steps {cfg.grad_accum_steps * 2}"
        ]
        if not cfg.model.gradient_checkpointing:
            knobs.append("--model.gradient-checkpointing")
        if cfg.model.quantization == "none":
            knobs.append("--model.quantization 4bit (QLoRA)")
        if cfg.optim.optimizer == "adamw":
            knobs.append("--optim.optimizer paged_adamw8bit")
        knobs.append("a smaller --data.image-size (if the vision tower allows)")
        raise RuntimeError(
            f"out of GPU memory at batch size {cfg.batch_size} ({str(err).splitlines()[0]}). Try, in order: "
            + "; ".join(knobs)
        ) from err


# ---------------------------------------------------------------------------------------------- export


def _plain_model(model: nn.Module) -> nn.Module:
    """The FastVLA model with LoRA adapters merged in (re-quantised if the base is quantised).

    Merging modifies ``model`` in place: call it once training is over.
    """
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def _merge_into_full_precision(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The QLoRA-trained adapters merged into the full-precision model they started from (on CPU).

    Merging into the 4-bit base would re-quantise the sum and lose most of a small update; instead the
    checkpoint is reloaded unquantised, wrapped with the same adapters, given the trained adapter and
    head weights, and merged. The result loads in fp32, or again in 4-bit with ``load_in_4bit``.
    """
    # deferred: start-up time (importing peft takes ~3 s)
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    base = FastVLAModel.from_pretrained(
        cfg.model.checkpoint, dtype=torch.float32, aux_goal_weight=cfg.model.aux_goal_weight
    )
    full = apply_lora(base, cfg.model, cfg.optim.head_modules)
    trained = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(model).items()}
    result = set_peft_model_state_dict(full, trained)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(
            f"adapter weights did not fit the full-precision model: {result.unexpected_keys[:5]}"
        )
    return full.merge_and_unload()


def export_policy(model: nn.Module, processor: Any, spec: Any, cfg: TrainConfig, path: Path) -> Path:
    """Write ``path`` atomically: model weights + config, processor (tokenizer, stats), policy config.

    A QLoRA run from a checkpoint (``--model.checkpoint`` with ``--model.quantization 4bit/8bit``) exports
    the adapters merged into the full-precision checkpoint (:func:`_merge_into_full_precision`);
    other runs export the trained model with its adapters merged as it is.
    """
    quantized_lora = (
        cfg.model.quantization != "none" and cfg.model.checkpoint and hasattr(model, "peft_config")
    )
    plain = _merge_into_full_precision(model, cfg) if quantized_lora else _plain_model(model)
    with atomic_directory(path, overwrite=True) as tmp:
        plain.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        policy_config = {
            # Read by FastVLAPolicy.from_pretrained; None = its defaults (FastVLA env keys, whole chunks).
            # A dataset recorded from another env through an observation map passes that map on.
            "obs_map": getattr(spec, "obs_map", None),
            "n_action_steps": None,
            "temporal_ensemble_coeff": None,
            # For people reading the folder.
            "cameras": list(spec.cameras),
            "state_dim": spec.state_dim,
            "action_dim": spec.action_dim,
            "chunk_size": cfg.data.chunk_size,
            "fps": spec.fps,
            "dataset": str(cfg.data.root),
            "trained_with_quantization": cfg.model.quantization,
            "merged_into": "full-precision checkpoint" if quantized_lora else "trained model",
        }
        (tmp / POLICY_CONFIG_FILE).write_text(json.dumps(policy_config, indent=2) + "\n")
        cfg.save(tmp / "train_config.yaml")
    return path
