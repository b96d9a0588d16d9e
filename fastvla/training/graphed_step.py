"""One training update captured in CUDA graphs and replayed: forward, backward, all-reduce, clip, AdamW.

A 4-bit 7B model with LoRA launches thousands of small kernels per step from Python (bitsandbytes layers,
PEFT wrappers, Hugging Face modules); on an H100 the eager step is CPU-bound (GPU busy ~92 of ~310 ms in
the profile of benchmarks/NOTES.md). Capturing the step once and replaying it removes that overhead.

How an update runs (``accum`` micro-batches, ``world`` processes):

1. ``accum`` x: copy the micro-batch into static input buffers, replay graph *A* — forward under autocast,
   ``loss / accum``, backward. Gradients accumulate in place into flat per-dtype buffers that every
   trainable parameter's ``.grad`` is a view of.
2. ``world > 1``: one ``all_reduce(AVG)`` per flat buffer, outside the graphs (DDP's result, by hand: no
   DDP wrapper, so nothing needs capturing across processes). LoRA gradients are small (~0.3 GB for r=32
   on a 7B decoder), a few ms over NVLink.
3. Replay graph *B* — (fp16: unscale and check for inf/NaN), clip the global norm, ``AdamW.step`` (fused,
   capturable, learning rate a device tensor that the scheduler fills), (fp16: update the loss scale), zero
   the gradient buffers. With :class:`~fastvla.training.offload.CPUOffloadAdamW` (a host step, which syncs)
   this part runs eagerly after the replayed graph *A*.

fp16 (GPUs without bf16, e.g. a T4) is captured too: graph *A* multiplies the loss by the scale, a device
tensor; graph *B* unscales the gradients and sets ``found_inf`` with
``torch._amp_foreach_non_finite_check_and_unscale_`` (the kernel ``GradScaler.unscale_`` uses), hands
``found_inf`` to fused AdamW, whose kernel skips the whole update (weights, moments, step count) when it is
set, and grows or backs off the scale with ``torch._amp_update_scale_`` (``GradScaler.update``'s kernel). No
value is read on the host, so nothing syncs. The scale and growth tracker are the ``GradScaler``'s own tensors
(updated in place), so its ``state_dict`` checkpoints them. One difference from an eager ``GradScaler`` loop:
the trainer's learning-rate schedule also advances on a skipped update (it cannot know without a sync).

Capture follows PyTorch's whole-network recipe: a few warm-up iterations on a side stream (they also create
the optimiser state and run Triton autotuning), then capture. Warm-up changes weights, optimiser state and
buffers, so they are snapshot before and restored after: the first replayed update starts from exactly the
state the trainer had. ``capture=False`` runs the same sequence eagerly (CPU tests, and the fallback).

Requirements (checked, with the fix named): CUDA, ``torch.optim.AdamW`` (or ``CPUOffloadAdamW``), inputs
of fixed shapes (instructions are padded to the processor's
``max_instruction_tokens``; positions ignore padding, so the loss is unchanged), and no RNG state saving in
gradient checkpointing (``preserve_rng_state=False``).

Non-finite losses: nothing here reads the loss or checks the weights, since a per-update check would be a
host sync per update. The trainer records the first non-finite loss on the device (a few tiny kernels, no
sync) and reads it, with a check of the weights, only at logging, validation, checkpoint and export
boundaries (see :mod:`fastvla.training.loop`): a diverged run stops there and saves nothing after it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fastvla.model.processor import pad_text
from fastvla.training.offload import CPUOffloadAdamW

__all__ = ["GraphCaptureError", "GraphedTrainStep", "pad_text", "try_graphed_step"]


class GraphCaptureError(RuntimeError):
    """The update could not be captured (the message says why and how to train without graphs)."""


def check_capturable_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer``'s step goes into a graph: ``torch.optim.AdamW``/``Adam`` yes (capturable),
    :class:`~fastvla.training.offload.CPUOffloadAdamW` no (it steps on the host, after the replay).

    Raises:
        GraphCaptureError: any other optimiser (the message names the fix).
    """

    if isinstance(optimizer, CPUOffloadAdamW):
        return False
    if not isinstance(optimizer, (torch.optim.AdamW, torch.optim.Adam)):
        raise GraphCaptureError(
            f"CUDA-graph training needs torch.optim.AdamW (capturable); got {type(optimizer).__name__}. "
            "Use --optim.optimizer adamw, or --cuda-graphs off for the 8-bit optimisers"
        )
    return True


class GraphedTrainStep:
    """A training update (see the module docstring) for ``model`` and ``optimizer``, replayed from graphs.

    Args:
        model: the (unwrapped, not DDP) model; ``model(**inputs).loss`` is the training loss.
        optimizer: a ``torch.optim.AdamW`` over the trainable parameters (made fused and capturable here
            on CUDA; its learning rates become device tensors that an ``LRScheduler`` fills in place).
        example: one micro-batch of inputs on the model's device, already at the fixed shapes.
        accum: micro-batches per update (gradients are averaged over them).
        max_grad_norm: clip the global gradient norm to this (0 = no clipping).
        autocast_dtype: ``torch.bfloat16``, ``torch.float16`` (with loss scaling), or ``None`` (full
            precision).
        process_group: all-reduce gradients across this group when it has more than one process
            (``torch.distributed``'s default group when initialised and ``None`` is given).
        capture: capture CUDA graphs (needs CUDA); ``False`` runs the same steps eagerly.
        warmup: eager warm-up iterations before capture.
        scaler: the ``torch.amp.GradScaler`` whose scale and growth tracker the update uses in place (e.g.
            Accelerate's, so checkpoints keep them); default: a new one when ``autocast_dtype`` is fp16.
            Giving one turns loss scaling on for any precision.

    Example:
        >>> step = GraphedTrainStep(model, opt, pad_text(first, 32), max_grad_norm=1.0)  # doctest: +SKIP
        >>> loss, grad_norm = step.update([pad_text(batch, 32)])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        example: Mapping[str, torch.Tensor],
        *,
        accum: int = 1,
        max_grad_norm: float = 0.0,
        autocast_dtype: torch.dtype | None = torch.bfloat16,
        process_group: Any = None,
        capture: bool = True,
        warmup: int = 3,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if accum < 1:
            raise ValueError(f"accum must be >= 1, got {accum}")
        self.step_in_graph = check_capturable_optimizer(optimizer)
        device = next(iter(example.values())).device
        if capture and device.type != "cuda":
            raise GraphCaptureError(
                f"CUDA graphs need a CUDA device; the inputs are on {device}. Train with --cuda-graphs off "
                "(or capture=False) on CPU"
            )
        self.model, self.optimizer = model, optimizer
        self.accum, self.max_grad_norm, self.autocast_dtype = accum, float(max_grad_norm), autocast_dtype
        self.device, self.captured = device, False
        self.group = process_group
        self.world = _world_size(process_group)
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        if not self.params:
            raise ValueError("the optimiser holds no trainable parameters")
        self.flat_grads = _flat_grads(self.params)
        self.static = {k: v.detach().clone() for k, v in example.items() if isinstance(v, torch.Tensor)}
        self.grad_norm = torch.zeros((), device=device)
        self.scaler = self._loss_scaling(scaler, autocast_dtype, device)
        if self.world > 1:
            self._broadcast_state()
        if device.type == "cuda" and self.step_in_graph:
            _make_capturable(optimizer, device)
        elif self.scaler is not None and self.step_in_graph:
            _make_fused(optimizer)  # found_inf is honoured by the fused kernel only
        self._loss: torch.Tensor | None = None
        self._aux: torch.Tensor | None = None  # the model output's aux_loss (/ accum), if it has one
        self._aux_total = torch.zeros((), device=device)
        self._graph_a: torch.cuda.CUDAGraph | None = None
        self._graph_b: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture(warmup)

    # ------------------------------------------------------------------------------------------ public
    def update(
        self, micro_batches: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one update over ``accum`` micro-batches; returns ``(mean loss, grad norm)`` device tensors.

        Nothing here waits for the GPU: read the returned tensors only when logging. The loss is not checked
        for NaN/inf here (the caller checks it at its logging and saving boundaries).

        Raises:
            ValueError: a wrong number of micro-batches, or one whose keys/shapes differ from the example.
        """
        if len(micro_batches) != self.accum:
            raise ValueError(f"expected {self.accum} micro-batches per update, got {len(micro_batches)}")
        total = torch.zeros((), device=self.device)
        self._aux_total.zero_()
        for batch in micro_batches:
            self._load(batch)
            if self.captured:
                self._graph_a.replay()
            else:
                self._forward_backward()
            total += self._loss
            if self._aux is not None:
                self._aux_total += self._aux
        self._all_reduce()
        if self._graph_b is not None:
            self._graph_b.replay()
        else:
            self._optimizer_step()
        return total, self.grad_norm.clone()

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """Mean unweighted auxiliary loss of the last update (a device tensor; None if the model's output
        has no ``aux_loss``, e.g. ``aux_goal_weight`` 0)."""
        return self._aux_total.clone() if self._aux is not None else None

    @property
    def skipped_updates(self) -> torch.Tensor | None:
        """Updates skipped for inf/NaN gradients so far (a device tensor; None without loss scaling)."""
        return self._skipped if self.scaler is not None else None

    # -------------------------------------------------------------------------------------- loss scale
    def _loss_scaling(
        self, scaler: torch.amp.GradScaler | None, dtype: torch.dtype | None, device: torch.device
    ) -> torch.amp.GradScaler | None:
        """The scaler in use (or None), with its scale and growth tracker created on ``device``."""
        if scaler is None and dtype != torch.float16:
            return None
        scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type)
        if not scaler.is_enabled():
            raise ValueError("the GradScaler given is disabled; pass an enabled one, or none for bf16/fp32")
        if scaler._scale is None:  # GradScaler creates these lazily; the graphs need them now, in place
            scaler._lazy_init_scale_growth_tracker(device)
        self._found_inf = torch.zeros((), device=device)
        self._skipped = torch.zeros((), device=device)
        return scaler

    def _unscale(self) -> None:
        """Gradients divided by the scale in place; ``found_inf`` set if any is inf/NaN (no host sync)."""
        self._found_inf.zero_()
        inv_scale = self.scaler._scale.double().reciprocal().float()
        for flat in self.flat_grads:
            torch._amp_foreach_non_finite_check_and_unscale_([flat], self._found_inf, inv_scale)
        self.optimizer.found_inf = self._found_inf  # fused AdamW (and CPUOffloadAdamW) skip the update

    def _update_scale(self) -> None:
        s = self.scaler
        self._skipped.add_(self._found_inf)
        torch._amp_update_scale_(
            s._scale,
            s._growth_tracker,
            self._found_inf,
            s._growth_factor,
            s._backoff_factor,
            s._growth_interval,
        )

    # ------------------------------------------------------------------------------------------ pieces
    def _forward_backward(self) -> None:
        ctx = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = self.model(**self.static)
            loss = out.loss / self.accum
        aux = getattr(out, "aux_loss", None)
        self._aux = aux.detach().float() / self.accum if aux is not None else None
        if self.scaler is not None:
            (loss.float() * self.scaler._scale).backward()
        else:
            loss.backward()
        self._loss = loss.detach()

    def _all_reduce(self) -> None:
        if self.world <= 1:
            return

        for flat in self.flat_grads:
            if self.device.type == "cuda":
                dist.all_reduce(flat, op=dist.ReduceOp.AVG, group=self.group)
            else:  # gloo has no AVG
                dist.all_reduce(flat, group=self.group)
                flat.div_(self.world)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self._unscale()
        if self.max_grad_norm > 0:  # after an inf the norm is inf and the update is skipped anyway
            norm = nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
            self.grad_norm.copy_(norm)
        self.optimizer.step()
        if self.scaler is not None:
            self._update_scale()
        self._zero_grads()

    def _zero_grads(self) -> None:
        for flat in self.flat_grads:
            flat.zero_()

    def _load(self, batch: Mapping[str, torch.Tensor]) -> None:
        if set(batch) != set(self.static):
            raise ValueError(
                f"micro-batch keys {sorted(batch)} differ from the captured ones {sorted(self.static)}"
            )
        for key, buffer in self.static.items():
            value = batch[key]
            if value.shape != buffer.shape:
                raise ValueError(
                    f"input {key!r} has shape {tuple(value.shape)} but the graph was captured with "
                    f"{tuple(buffer.shape)}: CUDA-graph training needs fixed shapes (full batches, padded "
                    "instructions); pad the inputs with pad_text or train with --cuda-graphs off"
                )
            buffer.copy_(value, non_blocking=True)

    def _broadcast_state(self) -> None:
        """Give every rank rank 0's trainable weights and buffers (what DDP does when it wraps a model)."""

        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        with torch.no_grad():
            for tensor in [*self.params, *self.model.buffers()]:
                dist.broadcast(tensor.data, src=src, group=self.group)

    # ----------------------------------------------------------------------------------------- capture
    def _capture(self, warmup: int) -> None:
        extra = [self.scaler._scale, self.scaler._growth_tracker, self._skipped] if self.scaler else []
        snapshot = _Snapshot(self.model, self.optimizer, self.params, extra)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(max(1, warmup)):  # >= 1: creates the optimiser state before capture
                    self._forward_backward()
                    self._optimizer_step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            torch.cuda.synchronize(self.device)  # the warm-up's last optimiser step left the gradients zeroed
            self._graph_a, self._graph_b = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph_a):
                self._forward_backward()
            if self.step_in_graph:
                with torch.cuda.graph(self._graph_b, pool=self._graph_a.pool()):
                    self._optimizer_step()
            else:  # a host step (CPUOffloadAdamW) runs eagerly after each replay of graph A
                self._graph_b = None
            torch.cuda.synchronize(self.device)
        except Exception as err:
            self._graph_a = self._graph_b = None
            snapshot.restore()
            self._zero_grads()  # a warm-up that failed half-way may have left gradients behind
            raise GraphCaptureError(
                f"capturing the training step in a CUDA graph failed ({type(err).__name__}: {err}); "
                "train with --cuda-graphs off, or remove what syncs with the host inside the model's forward"
            ) from err
        snapshot.restore()  # capturing records kernels without running them: the gradients are still zero
        self.captured = True


class _Snapshot:
    """Trainable weights, buffers and optimiser state before warm-up; ``restore`` copies them back in place.

    In place, because the captured graphs hold these tensors' addresses. Optimiser state created by the
    warm-up (none before it) is reset to a fresh AdamW state: zeros, step 0. A CPU-offloading optimiser's
    host AdamW and master weights count as its state; ``extra`` are more tensors (the loss scale).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        extra: Sequence[torch.Tensor] = (),
    ) -> None:
        inner = getattr(optimizer, "inner", None)
        self.optimizers = [optimizer, *([inner] if inner is not None else [])]
        hosts = [h for group in inner.param_groups for h in group["params"]] if inner is not None else []
        self.tensors = [(t, t.detach().clone()) for t in [*params, *model.buffers(), *hosts, *extra]]
        self.state = [
            {
                id(p): {k: v.detach().clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                for p, s in opt.state.items()
            }
            for opt in self.optimizers
        ]

    def restore(self) -> None:
        with torch.no_grad():
            for live, saved in self.tensors:
                live.copy_(saved)
            for opt, before in zip(self.optimizers, self.state, strict=True):
                for p, state in opt.state.items():
                    saved = before.get(id(p), {})
                    for key, value in state.items():
                        if isinstance(value, torch.Tensor):
                            value.copy_(saved[key]) if key in saved else value.zero_()


def _flat_grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """One zeroed flat buffer per (device, dtype); each parameter's ``.grad`` becomes a view into it.

    Backward then accumulates in place (``.grad`` exists), so the captured graph writes the same memory
    on every replay and a single all-reduce covers every gradient.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    flats = []
    for (device, dtype), members in groups.items():
        flat = torch.zeros(sum(p.numel() for p in members), device=device, dtype=dtype)
        offset = 0
        for p in members:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        flats.append(flat)
    return flats


def _make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Fused + capturable AdamW with device-tensor learning rates (a float lr would be baked into a graph)."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["foreach"] = None
        group["fused"] = all(
            p.is_cuda and p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in group["params"]
        )
        if not torch.is_tensor(group["lr"]):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in optimizer.state.values():  # state loaded from a checkpoint: steps must live on the device
        if "step" in state and torch.is_tensor(state["step"]):
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


def _make_fused(optimizer: torch.optim.Optimizer) -> None:
    """Fused AdamW (CPU or CUDA), whose kernel skips the update when ``found_inf`` is set.

    Raises:
        ValueError: a parameter the fused kernel cannot take.
    """
    for group in optimizer.param_groups:
        bad = [p for p in group["params"] if p.dtype not in (torch.float32, torch.bfloat16, torch.float16)]
        if bad:
            raise ValueError(f"loss scaling needs fused AdamW, which cannot step {bad[0].dtype} parameters")
        group["foreach"] = None
        group["fused"] = True


def _world_size(group: Any) -> int:

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def try_graphed_step(
    factory: Callable[[bool], GraphedTrainStep], required: bool, log: Callable[[str], None] = print
) -> GraphedTrainStep:
    """``factory(True)`` (captured); if capture fails and graphs were not ``required``, warn and return
    ``factory(False)`` (the same update, eager)."""
    try:
        return factory(True)
    except GraphCaptureError as err:
        if required:
            raise
        warnings.warn(f"{err}; continuing without CUDA graphs", stacklevel=2)
        log(f"CUDA-graph capture failed, training eagerly: {err}")
        return factory(False)
