"""Typed training configuration: the reference recipe as dataclass defaults.

A :class:`TrainConfig` is composed of a :class:`DataConfig`, a :class:`ModelConfig`, an
:class:`OptimConfig`, a :class:`MemoryConfig` and a :class:`ParallelConfig`.
Every field carries its documentation in ``metadata["help"]``; the command line
(``fastvla train --help``) is generated from the same fields (see :mod:`fastvla.training.args`), so the
flags and the Python API never drift apart. Configs round-trip through JSON and YAML.

This module imports neither torch nor transformers, so ``fastvla --help`` stays fast.

Example:
    >>> cfg = TrainConfig(data=DataConfig(root="path/to/dataset"), steps=100)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastvla.constants import FRESH_MODULES
from fastvla.utils.config import ConfigMixin, config_field, load_config_dict, nested_from_dicts
from fastvla.utils.config import check as _check

_f = config_field  # short name: every field below is one


@dataclass
class DataConfig:
    """Which data to train on and how samples are built."""

    root: str = _f("", "Dataset folder or Hugging Face hub repo id (LeRobot v3.0 or v2.1 layout). Required.")
    cameras: tuple[str, ...] = _f(
        (), "Cameras to train on by name (e.g. front wrist); empty = every camera of the dataset."
    )
    image_size: int = _f(
        0, "Square image side in pixels the model is trained at; 0 = the model's native size (tiny: 64)."
    )
    chunk_size: int = _f(8, "Actions predicted per forward pass (the action chunk T).")
    episodes: tuple[int, ...] = _f((), "Train on these episode indices only; empty = all episodes.")
    val_episodes: tuple[int, ...] = _f(
        (), "Episodes held out for validation; empty = pick a --data.val-fraction share at random (seeded)."
    )
    val_fraction: float = _f(
        0.05, "Share of episodes held out for validation when --data.val-episodes is empty (0 = none)."
    )
    depth: bool = _f(
        False,
        "Also train on each camera's depth map (observation.depth.<cam>, recorded with --depth); the model "
        "gets a depth stem (use_depth).",
    )
    augment: bool = _f(False, "Random shift/crop and colour jitter on training images (not on validation).")
    cache_dir: str = _f(
        "", "Folder of the decoded-frame cache (uint8, memory-mapped); empty = <output-dir>/frame_cache."
    )
    num_workers: int = _f(
        -1, "DataLoader worker processes per training process; -1 = auto (0 on <= 2 cores, else up to 8)."
    )

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.episodes = tuple(int(e) for e in self.episodes)
        self.val_episodes = tuple(int(e) for e in self.val_episodes)
        _check(
            self.image_size == 0 or self.image_size >= 8,
            f"data.image_size must be 0 (model default) or >= 8 pixels, got {self.image_size}",
        )
        _check(self.chunk_size >= 1, f"data.chunk_size must be >= 1, got {self.chunk_size}")
        _check(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        _check(self.num_workers >= -1, f"data.num_workers must be >= -1 (auto), got {self.num_workers}")
        overlap = set(self.episodes) & set(self.val_episodes)
        _check(
            not (self.episodes and overlap),
            f"episodes {sorted(overlap)} are both in data.episodes and data.val_episodes; pick disjoint sets",
        )


@dataclass
class ModelConfig:
    """Which model to train: a preset, backbone hub ids or a FastVLA checkpoint, plus quantisation/LoRA."""

    preset: str = _f(
        "tiny", "Model preset (tiny, openvla-7b-shape, ...); used unless backbones or a checkpoint are given."
    )
    vision_backbone: str = _f("", "Vision tower hub id or local path (with --model.text-backbone).")
    text_backbone: str = _f("", "Causal LM hub id or local path (with --model.vision-backbone).")
    checkpoint: str = _f(
        "", "A FastVLA model folder (e.g. a previous run's policy/) to continue fine-tuning from."
    )
    quantization: Literal["none", "4bit", "8bit"] = _f(
        "none", "Load the vision tower and decoder quantised with bitsandbytes (4bit = NF4 QLoRA)."
    )
    lora: Literal["auto", "on", "off"] = _f(
        "auto",
        "Train LoRA adapters instead of the full backbones; auto = on for backbones, checkpoints and "
        "quantised models, off for presets trained from scratch.",
    )
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = _f(
        0.0,
        "Dropout on the LoRA input (OpenVLA's fine-tuning uses 0). Above 0 the fused LoRA kernels fall back "
        "to PEFT's path, and CUDA graphs cannot be combined with gradient checkpointing.",
    )
    lora_vision: bool = _f(True, "Put adapters on the vision tower.")
    lora_language: bool = _f(True, "Put adapters on the language decoder.")
    lora_attention: bool = _f(True, "Adapt attention projections.")
    lora_mlp: bool = _f(True, "Adapt MLP layers (and the convolutions of conv towers).")
    lora_extra_targets: tuple[str, ...] = _f((), "More module-name suffixes that get adapters.")
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in the backward pass: much less memory, ~30% slower."
    )
    gradient_checkpointing_layers: int = _f(
        0,
        "With gradient checkpointing: recompute only the first N decoder layers (0 = all). Trades memory "
        "for speed in steps of one layer.",
    )
    kernels: Literal["auto", "on", "off"] = _f(
        "auto",
        "Fused Triton kernels (RMSNorm, SwiGLU, RoPE, MLP recomputation) in the decoder; auto = on CUDA.",
    )
    attn_implementation: Literal["auto", "sdpa", "sdpa_flash", "flash_attention_2", "eager"] = _f(
        "auto",
        "Attention backend: sdpa (PyTorch picks a kernel), sdpa_flash (PyTorch's FlashAttention-2 kernels "
        "only, for every attention without a padding mask; CUDA, bf16/fp16), flash_attention_2 (the "
        "flash-attn package), eager; auto = flash_attention_2 where flash-attn is installed on CUDA, "
        "else sdpa.",
    )
    preset_overrides: str = _f(
        "",
        'JSON object of FastVLAConfig fields overriding the preset, e.g. {"fusion": {"num_queries": 16}}.',
    )
    aux_goal_weight: float = _f(
        0.0,
        "Weight of the auxiliary hindsight-goal loss: training samples carry aux_goal (observation.state "
        "at the episode's last frame minus the state now, divided by the state's std) and a small head on "
        "the action queries' mean hidden state regresses it (L1), so the images must locate the goal. "
        "Logged as train/aux_goal_loss; validation stays the action loss. 0 = off (no head).",
    )

    def __post_init__(self) -> None:
        self.lora_extra_targets = tuple(self.lora_extra_targets)
        _check(
            bool(self.vision_backbone) == bool(self.text_backbone),
            "model.vision_backbone and model.text_backbone go together; got "
            f"vision={self.vision_backbone!r}, text={self.text_backbone!r}",
        )
        _check(
            not (self.checkpoint and self.vision_backbone),
            "give either model.checkpoint or backbones, not both",
        )
        _check(self.lora_r >= 1, f"model.lora_r must be >= 1, got {self.lora_r}")
        _check(self.lora_alpha >= 1, f"model.lora_alpha must be >= 1, got {self.lora_alpha}")
        _check(
            0.0 <= self.lora_dropout < 1.0, f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}"
        )
        _check(
            self.quantization in ("none", "4bit", "8bit"),
            f"model.quantization {self.quantization!r} unknown; use none, 4bit or 8bit",
        )
        _check(self.lora in ("auto", "on", "off"), f"model.lora {self.lora!r} unknown; use auto, on or off")
        _check(
            self.kernels in ("auto", "on", "off"),
            f"model.kernels {self.kernels!r} unknown; use auto, on or off",
        )
        _check(
            self.attn_implementation in ("auto", "sdpa", "sdpa_flash", "flash_attention_2", "eager"),
            f"model.attn_implementation {self.attn_implementation!r} unknown; use auto, sdpa, sdpa_flash, "
            "flash_attention_2 or eager",
        )
        _check(
            self.aux_goal_weight >= 0,
            f"model.aux_goal_weight must be >= 0 (0 = off), got {self.aux_goal_weight}",
        )
        _check(
            self.gradient_checkpointing_layers >= 0,
            "model.gradient_checkpointing_layers must be >= 0 (0 = all), got "
            f"{self.gradient_checkpointing_layers}",
        )
        if self.preset_overrides:
            try:
                parsed = json.loads(self.preset_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"model.preset_overrides is not valid JSON ({err}): {self.preset_overrides!r}"
                ) from None
            _check(isinstance(parsed, dict), f"model.preset_overrides must be a JSON object, got {parsed!r}")
            _check(
                "aux_goal_weight" not in parsed,
                "model.preset_overrides sets aux_goal_weight; use --model.aux-goal-weight instead (it also "
                "gives the training samples their aux_goal target)",
            )

    @property
    def use_lora(self) -> bool:
        """Whether LoRA adapters are trained (resolves ``lora="auto"``)."""
        if self.lora != "auto":
            return self.lora == "on"
        return bool(self.vision_backbone or self.checkpoint or self.quantization != "none")

    @property
    def overrides(self) -> dict[str, Any]:
        """``preset_overrides`` parsed."""
        return json.loads(self.preset_overrides) if self.preset_overrides else {}


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit"] = _f(
        "adamw", "adamw (torch), adamw8bit or paged_adamw8bit (bitsandbytes; less optimizer memory)."
    )
    lr: float = _f(5e-4, "Peak learning rate of LoRA adapters and pretrained/backbone parameters.")
    head_lr: float = _f(1e-3, "Peak learning rate of the freshly initialised fusion module and action head.")
    head_modules: tuple[str, ...] = _f(
        FRESH_MODULES,
        "Module paths of the freshly initialised modules (they get --optim.head-lr).",
    )
    weight_decay: float = _f(0.01, "Decoupled weight decay on matrices (never on biases, norms, embeddings).")
    betas: tuple[float, float] = _f((0.9, 0.999), "Adam betas (beta1 beta2).")
    eps: float = _f(1e-8, "Adam epsilon.")
    max_grad_norm: float = _f(1.0, "Clip the global gradient norm to this value (0 = no clipping).")
    scheduler: Literal["cosine", "linear", "constant"] = _f(
        "cosine", "Learning-rate decay after warm-up: cosine, linear or constant."
    )
    warmup_steps: int = _f(100, "Linear warm-up from 0 to the peak learning rate over this many updates.")
    min_lr_ratio: float = _f(0.1, "Final learning rate as a fraction of the peak (cosine/linear).")

    def __post_init__(self) -> None:
        self.head_modules = tuple(self.head_modules)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        _check(
            self.optimizer in ("adamw", "adamw8bit", "paged_adamw8bit"),
            f"optim.optimizer {self.optimizer!r} unknown; use adamw, adamw8bit or paged_adamw8bit",
        )
        _check(self.lr > 0 and self.head_lr > 0, f"learning rates must be > 0, got {self.lr}, {self.head_lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _check(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"optim.betas must be two numbers in [0, 1), got {self.betas}",
        )
        _check(self.max_grad_norm >= 0, f"optim.max_grad_norm must be >= 0, got {self.max_grad_norm}")
        _check(
            self.scheduler in ("cosine", "linear", "constant"),
            f"optim.scheduler {self.scheduler!r} unknown; use cosine, linear or constant",
        )
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(
            0.0 <= self.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
        )


@dataclass
class MemoryConfig:
    """Where training state lives: options that trade host-device copies for GPU memory (CUDA only)."""

    offload_optimizer: bool = _f(
        False,
        "Keep AdamW's state (8 bytes per trainable parameter) and a master copy of the trainable weights in "
        "CPU memory and run the update there (fastvla.training.offload.CPUOffloadAdamW). Needs "
        "--optim.optimizer adamw; with CUDA graphs the forward/backward stays captured and the update runs "
        "eagerly. On CPU it changes nothing and is left off with a note.",
    )
    offload_activations: bool = _f(
        False,
        "Move the tensors saved for the backward to pinned CPU memory during the forward "
        "(torch.autograd.graph.save_on_cpu) and back during the backward: activation memory of about one "
        "layer, for host-device traffic of the same size. Not capturable: training runs without CUDA graphs. "
        "On CPU it changes nothing and is left off with a note.",
    )


@dataclass
class ParallelConfig:
    """Model parallelism across processes (``accelerate launch`` / ``torchrun``)."""

    tensor_parallel_vision: int = _f(
        1,
        "Shard the vision tower's attention and MLP linears over this many processes (PyTorch tensor "
        "parallelism, DTensor): each rank keeps 1/N of the tower's weights and the processes of a group "
        "encode their images together. ViT-family towers, not quantised, frozen (--model.no-lora-vision or "
        "no LoRA); the process count must be a multiple of N. 1 = off. Tested equal to one process on CPU; "
        "not yet measured on GPUs.",
    )

    def __post_init__(self) -> None:
        _check(
            self.tensor_parallel_vision >= 1,
            f"parallel.tensor_parallel_vision must be >= 1 (1 = off), got {self.tensor_parallel_vision}",
        )


@dataclass
class TrainConfig(ConfigMixin):
    """A whole fine-tuning run. Defaults are the reference recipe; see ``fastvla train --help``."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Data"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Model"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimisation"})
    memory: MemoryConfig = field(default_factory=MemoryConfig, metadata={"help": "Memory (CPU offload)"})
    parallel: ParallelConfig = field(default_factory=ParallelConfig, metadata={"help": "Model parallelism"})
    output_dir: str = _f("outputs/train", "Run folder: checkpoints/, logs/ and the final policy/.")
    steps: int = _f(10_000, "Optimizer updates to run (each is batch-size x grad-accum x processes samples).")
    batch_size: int = _f(8, "Samples per micro-batch per process.")
    grad_accum_steps: int = _f(1, "Micro-batches accumulated per optimizer update.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = _f(
        "auto",
        "Autocast precision; auto = bf16 on GPUs that have it, fp16 + loss scaling on others, no on CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "Where to train; auto = CUDA when available.")
    seed: int = _f(0, "Seed of weights init, data order, validation split and dropout.")
    deterministic: bool = _f(
        False, "Use deterministic algorithms only (slower; exact reproducibility on GPU)."
    )
    log_every: int = _f(
        50, "Log loss / lr / samples per s every N updates (the only host syncs in the loop)."
    )
    save_every: int = _f(
        1000, "Write a checkpoint every N updates (and always at the end); 0 = only at the end."
    )
    keep_checkpoints: int = _f(2, "Keep the newest N checkpoints; older ones are deleted (0 = keep all).")
    val_every: int = _f(500, "Validation loss on the held-out episodes every N updates (0 = off).")
    val_batches: int = _f(50, "At most this many validation batches per evaluation (0 = all).")
    eval_every: int = _f(
        0, "Call the closed-loop eval hook every N updates (Python API train(eval_hook=...))."
    )
    resume: bool = _f(False, "Continue from the newest complete checkpoint in <output-dir>/checkpoints.")
    overwrite: bool = _f(False, "Start afresh even if <output-dir> already holds checkpoints (deletes them).")
    tensorboard: bool = _f(True, "Write TensorBoard event files to <output-dir>/logs.")
    wandb_project: str = _f("", "Also log to this Weights & Biases project (needs `pip install wandb`).")
    progress: bool = _f(True, "Show a progress bar.")
    ddp_find_unused_parameters: bool = _f(
        False, "DDP: tolerate parameters that get no gradient (slower; only if DDP complains)."
    )
    cuda_graphs: Literal["auto", "on", "off"] = _f(
        "auto",
        "Capture each update (forward, backward, all-reduce, clip, AdamW) in CUDA graphs and replay it: "
        "removes Python/launch overhead (3x faster for a 4-bit 7B model on an H100). fp16 is captured with "
        "its loss scaling. auto = on CUDA when the run allows it (optim.optimizer adamw, no activation "
        "offload, no LoRA dropout under gradient checkpointing), falling back to eager if capture fails; on "
        "= required (error otherwise).",
    )

    def __post_init__(self) -> None:
        nested_from_dicts(self)
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.grad_accum_steps >= 1, f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        _check(
            self.mixed_precision in ("auto", "no", "bf16", "fp16"),
            f"mixed_precision {self.mixed_precision!r} unknown; use auto, no, bf16 or fp16",
        )
        _check(
            self.device in ("auto", "cpu", "cuda"), f"device {self.device!r} unknown; use auto, cpu or cuda"
        )
        for name in ("log_every", "save_every", "keep_checkpoints", "val_every", "val_batches", "eval_every"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        _check(
            self.cuda_graphs in ("auto", "on", "off"),
            f"cuda_graphs {self.cuda_graphs!r} unknown; use auto, on or off",
        )
        _check(
            not (self.memory.offload_optimizer and self.optim.optimizer != "adamw"),
            f"memory.offload_optimizer offloads AdamW; optim.optimizer is {self.optim.optimizer}: use "
            "--optim.optimizer adamw (8-bit optimizers already keep their state small)",
        )
        if self.cuda_graphs == "on":
            problem = graph_incompatibility(self)
            _check(problem is None, f"--cuda-graphs on: {problem}")
        _check(
            not (self.resume and self.overwrite),
            "resume and overwrite exclude each other: --resume continues the run, --overwrite deletes it",
        )

    # ----------------------------------------------------------------------------------------- I/O
    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def graph_incompatibility(cfg: TrainConfig) -> str | None:
    """Why this run cannot be captured in CUDA graphs (with the fix), or ``None`` if it can.

    The device is not checked here (``device=auto`` resolves at run time); the trainer checks it.
    """
    if cfg.device == "cpu":
        return "CUDA graphs need a CUDA GPU, and device is cpu; use --cuda-graphs off (or auto)"
    if cfg.memory.offload_activations:
        return (
            "activation offload copies to fresh pinned host buffers every step, which a graph cannot "
            "replay; drop --memory.offload-activations, or --cuda-graphs off"
        )
    if cfg.optim.optimizer != "adamw":
        return (
            f"optim.optimizer {cfg.optim.optimizer} is not capturable; use --optim.optimizer adamw, "
            "or --cuda-graphs off"
        )
    m = cfg.model
    if m.gradient_checkpointing and m.use_lora and m.lora_dropout > 0:
        return (
            f"gradient checkpointing would redraw LoRA dropout masks (model.lora_dropout={m.lora_dropout}) "
            "in the recomputation; use --model.lora-dropout 0, or --cuda-graphs off"
        )
    return None


__all__ = [
    "DataConfig",
    "MemoryConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "TrainConfig",
    "graph_incompatibility",
    "load_config_dict",
]
