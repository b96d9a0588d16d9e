"""The training loop: ``fastvla.train(TrainConfig(...))``.

Runs through 🤗 Accelerate, so the same code trains on CPU, one GPU, or data-parallel on several
(``accelerate launch --num_processes N -m fastvla train ...``). Under DDP every rank builds its own
model (a 4-bit base is loaded by each rank on its own device) and reads its own slice of each global
batch; gradients are averaged by DDP.

One update = ``grad_accum_steps`` micro-batches of ``batch_size`` samples per process. The loop keeps
losses on the device and syncs with the host only every ``log_every`` updates.

A non-finite loss stops training with :class:`~fastvla.errors.NonFiniteError` (the update, the value, what
to try), and nothing with non-finite weights is ever checkpointed or exported. The first non-finite loss
is recorded on the device, without a host sync; it is read every update only in a single CPU process
(where a sync costs nothing). On a GPU, eager or CUDA-graphed, and under DDP it is read, together with a
check of the trainable weights, where the loop syncs anyway: at logging, before validation, the eval hook,
every checkpoint and the export. So a GPU run may go on for up to ``log_every`` updates after the loss
diverged, but it never saves them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from fastvla.errors import NonFiniteError
from fastvla.model.parallel import unshard_vision
from fastvla.training import checkpoint as ckpt
from fastvla.training import data as data_lib
from fastvla.training import factory
from fastvla.training.config import TrainConfig
from fastvla.training.graphed_step import GraphedTrainStep, try_graphed_step
from fastvla.training.offload import activation_offload
from fastvla.training.optim import build_optimizer, build_scheduler
from fastvla.training.tracking import Tracker
from fastvla.utils.image import as_hw
from fastvla.utils.preload import preload_triton

#: ``eval_hook(step=..., model=..., processor=..., output_dir=...) -> {"success_rate": ...}``; runs on the
#: main process every ``eval_every`` updates, its metrics are logged under ``eval/``.
EvalHook = Callable[..., Mapping[str, float] | None]


def train(
    config: TrainConfig, eval_hook: EvalHook | None = None, data: data_lib.TrainingData | None = None
) -> Path:
    """Fine-tune a FastVLA model as ``config`` says; returns the exported policy folder.

    The folder (``<output_dir>/policy``) loads with ``FastVLAPolicy.from_pretrained``. Checkpoints go to
    ``<output_dir>/checkpoints``, TensorBoard logs to ``<output_dir>/logs``.

    Args:
        config: the run's :class:`~fastvla.training.TrainConfig`.
        eval_hook: optional closed-loop evaluation called every ``config.eval_every`` updates with
            keyword arguments ``step``, ``model`` (unwrapped, in eval mode), ``processor``, ``output_dir``;
            returns metrics to log (e.g. ``{"success_rate": 0.8}``);
            :func:`fastvla.eval.hooks.closed_loop_eval_hook` makes one that rolls the model out.
        data: where samples come from (:class:`~fastvla.training.data.TrainingData`); default: the LeRobot
            dataset at ``config.data.root``, read by :mod:`fastvla.datasets`.

    Example:
        >>> from fastvla.training import DataConfig, TrainConfig, train
        >>> cfg = TrainConfig(data=DataConfig(root="data/pick", image_size=64), steps=200)  # doctest: +SKIP
        >>> policy_dir = train(cfg)  # doctest: +SKIP
    """
    return Trainer(config, eval_hook, data).fit()


class Trainer:
    """Set-up (accelerator, data, model, optimiser, resume) in ``__init__``; the loop in :meth:`fit`.

    ``eval_hook`` and ``data`` are what the caller injects (see :func:`train`): the training core imports
    neither the envs, the evaluation nor a dataset format.
    """

    def __init__(
        self,
        config: TrainConfig,
        eval_hook: EvalHook | None = None,
        data: data_lib.TrainingData | None = None,
    ) -> None:
        self.cfg = cfg = config
        self.eval_hook = eval_hook
        if eval_hook is not None and cfg.eval_every:
            preload_triton()  # before the hook renders: Triton after a Mesa GL context segfaults
        self.data = data if data is not None else data_lib.default_training_data()
        self.out = cfg.output_path
        self.accelerator = factory.make_accelerator(cfg)
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self._prepare_output_dir()

        # Dataset metadata and split first: the model's shapes and statistics come from the dataset.
        self.spec = self.data.inspect(cfg.data, cfg.seed)
        self.model, self.processor = factory.build_model(cfg, self.spec, acc.device)
        self.tp_mesh = factory.setup_vision_tensor_parallel(cfg, self.model, acc)
        if self.tp_mesh is not None and self.is_main:
            dp, tp = self.tp_mesh.shape
            print(f"fastvla train: vision tower sharded over {tp} processes, {dp} data-parallel group(s)")
        # (H, W): the model's own size unless data.image_size asks for a square one
        image_size = as_hw(cfg.data.image_size) if cfg.data.image_size else as_hw(self.processor.image_size)
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.out / "frame_cache"
        # Only training samples carry the hindsight goal: val/loss stays the action loss, comparable across
        # aux weights. The argument is passed only when used, so TrainingData without it keep working.
        self.aux_goal = cfg.model.aux_goal_weight > 0
        aux = {"aux_goal": True} if self.aux_goal else {}
        with acc.main_process_first():  # the main process fills the frame cache, the others then read it
            self.train_set = self.data.build(
                self.spec, cfg.data, self.spec.train_episodes, True, cache, image_size, self.is_main, **aux
            )
            self.val_set = None
            if self.spec.val_episodes and cfg.val_every:
                self.val_set = self.data.build(
                    self.spec, cfg.data, self.spec.val_episodes, False, cache, image_size, self.is_main
                )
        world, rank = acc.num_processes, acc.process_index
        self.sampler = data_lib.train_sampler(len(self.train_set), cfg.batch_size, cfg.seed, world, rank)
        workers = data_lib.auto_num_workers(cfg.data.num_workers, _local_world_size(acc))
        pin = acc.device.type == "cuda"
        self.train_loader = data_lib.make_loader(self.train_set, self.sampler, workers, pin, cfg.seed)
        self.val_loader = None
        if self.val_set is not None:
            val_sampler = data_lib.ShardedEvalSampler(len(self.val_set), cfg.batch_size, world, rank)
            self.val_loader = data_lib.make_loader(self.val_set, val_sampler, min(workers, 1), pin, cfg.seed)

        # Optimiser and schedule. With CUDA graphs the model is not wrapped in DDP: the graphed update
        # all-reduces the flat gradient buffers itself (fastvla.training.graphed_step).
        self.offload_optimizer, self.offload_activations, note = factory.resolve_offload(cfg, acc.device)
        if note and self.is_main:
            print(f"fastvla train: {note}")
        optimizer = build_optimizer(self.model, cfg.optim, offload=self.offload_optimizer)
        self.scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
        self.graphs, self.graphs_required = factory.use_cuda_graphs(cfg, acc.device)
        self.graphed: GraphedTrainStep | None = None
        if self.graphs:
            self.optimizer = acc.prepare(optimizer)
        else:
            self.model, self.optimizer = acc.prepare(self.model, optimizer)

        # Counters and data position; overwritten by a resume.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.samples_seen = 0
        #: Every logged metric dict (with its "step"), main process and others alike.
        self.history: list[dict[str, float]] = []
        # Non-finite guard (module docstring): first bad update and its loss, kept on the device.
        self._check_every_step = not self.graphs and acc.device.type == "cpu" and acc.num_processes == 1
        self._bad_step = torch.full((), -1, dtype=torch.int64, device=acc.device)
        self._bad_loss = torch.zeros((), device=acc.device)
        #: Sum over the updates of the log window of the unweighted auxiliary loss (aux_goal runs only).
        self._aux_sum = torch.zeros((), device=acc.device)
        self._maybe_resume()

    # ------------------------------------------------------------------------------------------- loop
    def fit(self) -> Path:
        """Run the remaining updates, checkpoint, export the policy; returns the policy folder."""
        cfg, acc = self.cfg, self.accelerator
        tracker = Tracker(
            self.out / "logs",
            total_steps=cfg.steps,
            initial_step=self.step,
            enabled=self.is_main,
            tensorboard=cfg.tensorboard,
            progress=cfg.progress,
            wandb_project=cfg.wandb_project,
            run_config=cfg.to_dict(),
        )
        global_batch = cfg.batch_size * cfg.grad_accum_steps * acc.num_processes
        batches = self._batches()
        if self.eval_hook is not None and cfg.eval_every and self.val_loader is not None:
            # Fork the (persistent) validation workers now: once the eval hook has created a GL
            # context, a forked child would deadlock. Training workers start with the first batch.
            iter(self.val_loader)
        self.model.train()
        loss_sum = torch.zeros((), device=acc.device)
        grad_norm = torch.zeros((), device=acc.device)
        window_start, window_steps = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                with factory.oom_advice(cfg):
                    if self.graphs:
                        loss, grad_norm = self._graphed_update(batches)
                        if self.graphed.aux_loss is not None:
                            self._aux_sum += self.graphed.aux_loss
                        self.scheduler.step()
                    else:
                        loss = self._update(batches)
                        if cfg.optim.max_grad_norm > 0:
                            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                        self.optimizer.step()
                        if not acc.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule in place
                            self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                loss_sum += loss
                self.step += 1
                self.samples_seen += global_batch
                window_steps += 1
                self._watch_loss(loss)
                tracker.advance()

                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = time.perf_counter() - window_start
                    self._log_train(tracker, loss_sum, grad_norm, window_steps, elapsed, global_batch)
                    loss_sum.zero_()
                    self._aux_sum.zero_()
                    window_start, window_steps = time.perf_counter(), 0
                paused = time.perf_counter()
                self._periodic(tracker)
                window_start += time.perf_counter() - paused  # samples/s counts training time only
        finally:
            tracker.close()
        return self.export()

    def _periodic(self, tracker: Tracker) -> None:
        """Validation, the closed-loop eval hook and checkpoints, each at its own interval."""
        cfg = self.cfg
        due = [
            cfg.val_every and self.step % cfg.val_every == 0 and self.val_loader is not None,
            cfg.eval_every and self.eval_hook is not None and self.step % cfg.eval_every == 0,
        ]
        if any(due):
            self.check_finite()
        if due[0]:
            val_loss = self.validate()
            self.history.append({"step": self.step, "val/loss": val_loss})
            tracker.log(self.step, {"val/loss": val_loss})
            tracker.message(f"step {self.step}: val loss {val_loss:.4f}")
        if due[1]:
            self._run_eval_hook(tracker)
        if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps:
            self.save_checkpoint()

    # ------------------------------------------------------------------------------- non-finite guard
    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Record the first update whose loss is not finite, on the device (no host sync, graph-friendly)."""
        first = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_loss.copy_(torch.where(first, loss.float(), self._bad_loss))
        self._bad_step.masked_fill_(first, self.step)
        if self._check_every_step:
            self.check_finite(weights=False)

    def check_finite(self, weights: bool = True) -> None:
        """Stop training if a loss so far, or (``weights``) a trainable weight now, is not finite.

        One host sync (collective under DDP: every process calls it at the same update).

        Raises:
            NonFiniteError: naming the update, what was not finite and what to try.
        """
        acc = self.accelerator
        params = []
        if weights:
            params = [(n, p) for n, p in acc.unwrap_model(self.model).named_parameters() if p.requires_grad]
        weights_bad = torch.zeros((), dtype=torch.int64, device=acc.device)
        if params:
            weights_bad = (~torch.stack([torch.isfinite(p).all() for _, p in params]).all()).long()
        flags = torch.stack([self._bad_step, weights_bad])
        if acc.num_processes > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad_step, bad_weights = flags.tolist()
        if bad_step < 0 and not bad_weights:
            return
        if bad_step >= 0:
            value = float(self._bad_loss) if int(self._bad_step) >= 0 else "not finite on another process"
            what = f"the loss was {value} at update {bad_step}"
        else:
            names = [n for n, p in params if not bool(torch.isfinite(p).all())] or ["on another process"]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            what = f"trainable weights hold NaN/inf values after update {self.step} ({shown})"
        raise NonFiniteError(f"training diverged: {what}. {self._divergence_hint()}")

    def _divergence_hint(self) -> str:
        optim = self.cfg.optim
        saved = ckpt.list_checkpoints(self.out)
        last = (
            f"the last checkpoint, {saved[-1][1]}, is from before it (--resume continues from there)"
            if saved
            else "no checkpoint was written"
        )
        return (
            f"Nothing after it was saved; {last}. Try a lower learning rate (now --optim.lr {optim.lr:g}, "
            f"--optim.head-lr {optim.head_lr:g}) and start again with --overwrite, check the dataset for "
            "NaN/inf values, or train with --mixed-precision no"
        )

    def _update(self, batches: Iterator[dict[str, Any]]) -> torch.Tensor:
        """Forward/backward over ``grad_accum_steps`` micro-batches; returns the update's mean loss."""
        accum = self.cfg.grad_accum_steps
        total = torch.zeros((), device=self.accelerator.device)
        for micro in range(accum):
            inputs = factory.model_inputs(self.processor, next(batches), self.accelerator.device)
            # Only the last micro-batch all-reduces gradients (no_sync is a no-op without DDP).
            sync = micro == accum - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                with self._saved_tensors_place():
                    out = self.model(**inputs)
                    loss = out.loss / accum
                aux = getattr(out, "aux_loss", None)
                if aux is not None:
                    self._aux_sum += aux.detach() / accum
                self.accelerator.backward(loss)
            total += loss.detach()
        return total

    def _saved_tensors_place(self) -> contextlib.AbstractContextManager:
        """Around the forward: tensors saved for the backward go to host memory with activation offload."""
        if not self.offload_activations:
            return contextlib.nullcontext()

        return activation_offload(self.accelerator.device)

    def _graphed_update(self, batches: Iterator[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One update through :class:`GraphedTrainStep` (captured at the first call); (loss, grad norm)."""
        device = self.accelerator.device
        micro = [
            self.processor.pad_instructions(factory.model_inputs(self.processor, next(batches), device))
            for _ in range(self.cfg.grad_accum_steps)
        ]
        if self.graphed is None:
            self.graphed = self._make_graphed_step(micro[0])
        return self.graphed.update(micro)

    def _make_graphed_step(self, example: dict[str, torch.Tensor]) -> GraphedTrainStep:
        cfg, acc = self.cfg, self.accelerator
        mode = factory.resolve_mixed_precision(cfg.mixed_precision, acc.device.type)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        scaler = acc.scaler if mode == "fp16" else None  # its scale tensors are used (and saved) in place
        model = acc.unwrap_model(self.model)
        optimizer = self.optimizer.optimizer

        def make(capture: bool) -> GraphedTrainStep:
            return GraphedTrainStep(
                model,
                optimizer,
                example,
                accum=cfg.grad_accum_steps,
                max_grad_norm=cfg.optim.max_grad_norm,
                autocast_dtype=dtype,
                capture=capture,
                scaler=scaler,
            )

        step = try_graphed_step(make, self.graphs_required, log=print if self.is_main else lambda _: None)
        if self.is_main and step.captured:
            what = "clip, AdamW" if step.step_in_graph else "then AdamW on the CPU, eagerly"
            scaling = ", fp16 loss scaling" if step.scaler is not None else ""
            print(f"fastvla train: update captured in CUDA graphs (forward, backward{scaling}, {what})")
        return step

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless stream of training batches from the saved position; keeps the position counters."""
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            for batch in self.train_loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # ------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss over (at most ``val_batches``) held-out batches, averaged over all processes."""
        acc = self.accelerator
        self._sync_buffers()
        # The unwrapped model: a DDP forward would sync buffers, and ranks may see unequal batch counts.
        model = acc.unwrap_model(self.model)
        factory.guard_quantized_eval(model)
        model.eval()
        total = torch.zeros(2, device=acc.device)  # (sum of per-sample losses, samples)
        try:
            for batch, counted in self._val_batches():
                inputs = factory.model_inputs(self.processor, batch, acc.device)
                n = inputs["actions"].shape[0] * counted
                total += torch.stack(
                    [model(**inputs).loss.float() * n, torch.tensor(float(n), device=acc.device)]
                )
        finally:
            model.train()
        total = acc.reduce(total, reduction="sum")
        return float(total[0] / total[1].clamp(min=1))

    def _val_batches(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """``(batch, counted)`` of this rank's validation batches (at most ``val_batches``).

        With a sharded vision tower every forward is collective, so every rank runs as many as the rank with
        the most; ranks with fewer repeat one, not counted.
        """
        mine = (
            len(self.val_loader)
            if not self.cfg.val_batches
            else min(len(self.val_loader), self.cfg.val_batches)
        )
        steps = mine
        if self.tp_mesh is not None:
            most = torch.tensor([mine], device=self.accelerator.device)
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
            steps = int(most)
        last = None
        for _, batch in zip(range(mine), self.val_loader):
            last = batch
            yield batch, True
        for _ in range(steps - mine):
            yield (last if last is not None else next(iter(self.train_loader))), False

    def _run_eval_hook(self, tracker: Tracker) -> None:
        acc = self.accelerator
        if self.is_main:
            model = acc.unwrap_model(self.model)
            factory.guard_quantized_eval(model)
            model.eval()
            try:
                metrics = self.eval_hook(
                    step=self.step, model=model, processor=self.processor, output_dir=self.out
                )
            finally:
                model.train()
            if metrics:
                logged = {f"eval/{k}": float(v) for k, v in metrics.items()}
                self.history.append({"step": self.step, **logged})
                tracker.log(self.step, logged)
                tracker.message(f"step {self.step}: " + " ".join(f"{k}={v:.3g}" for k, v in metrics.items()))
        acc.wait_for_everyone()

    def _log_train(
        self,
        tracker: Tracker,
        loss_sum: torch.Tensor,
        grad_norm: torch.Tensor | float,
        steps: int,
        elapsed: float,
        global_batch: int,
    ) -> None:
        acc = self.accelerator
        loss = float(acc.reduce(loss_sum.detach().clone(), reduction="mean")) / max(1, steps)
        lrs = self.scheduler.get_last_lr()
        samples_per_s = steps * global_batch / max(elapsed, 1e-9)
        metrics = {
            "train/loss": loss,
            "train/lr": lrs[0],
            "train/samples_per_s": samples_per_s,
            "train/grad_norm": float(grad_norm),
            "train/epoch": self.epoch + self.batch_in_epoch / max(1, self.sampler.batches_per_epoch),
        }
        show = {"loss": f"{loss:.4f}", "lr": f"{lrs[0]:.2e}", "samples/s": f"{samples_per_s:.1f}"}
        if self.aux_goal:  # unweighted; train/loss includes aux_goal_weight times it
            aux = float(acc.reduce(self._aux_sum.detach().clone(), reduction="mean")) / max(1, steps)
            metrics["train/aux_goal_loss"] = aux
            show["aux"] = f"{aux:.4f}"
        if acc.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(acc.device) / 2**30
            metrics["train/peak_mem_gib"] = mem
            show["mem"] = f"{mem:.1f}G"
        self.history.append({"step": self.step, **metrics})
        tracker.log(self.step, metrics, show)
        self.check_finite()  # the loss was just fetched: this sync is (nearly) free

    # ------------------------------------------------------------------------------------ checkpoints
    def _prepare_output_dir(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        existing = ckpt.list_checkpoints(self.out)
        if existing and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(
                f"{self.out} already holds checkpoints (newest: {existing[-1][1].name}); pass --resume to "
                "continue that run, --overwrite to start again, or another --output-dir"
            )
        if self.is_main:
            if cfg.overwrite:
                shutil.rmtree(self.out / ckpt.CHECKPOINTS, ignore_errors=True)
                shutil.rmtree(self.out / "logs", ignore_errors=True)
            ckpt.remove_stale_temporaries(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / ckpt.CONFIG_FILE)
        acc.wait_for_everyone()

    def trainer_state(self) -> dict[str, Any]:
        """Counters saved with a checkpoint."""
        cfg = self.cfg
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "num_processes": self.accelerator.num_processes,
            "batch_size": cfg.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps,
            "seed": cfg.seed,
            "train_episodes": self.spec.train_episodes,
            "val_episodes": self.spec.val_episodes,
        }

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of the current state (collective: call on every process)."""
        from accelerate.utils import gather_object  # deferred: start-up time (accelerate)

        acc = self.accelerator
        self.check_finite()  # never checkpoint a diverged run
        self._sync_buffers()
        rng_states = gather_object([ckpt.capture_rng_state()])  # one per rank, in rank order
        path = ckpt.checkpoint_path(self.out, self.step)
        if self.is_main:
            ckpt.save_checkpoint(
                path,
                model=acc.unwrap_model(self.model),
                optimizer=self.optimizer.optimizer,
                scheduler=self.scheduler,
                scaler=acc.scaler,
                trainer_state=self.trainer_state(),
                rng_states=rng_states,
                config_yaml=yaml.safe_dump(self.cfg.to_dict(), sort_keys=False),
                stats=self.spec.stats,
            )
            ckpt.prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does before each forward.

        Each rank updates its running statistics on its own micro-batches after that broadcast, so
        without this the ranks would disagree at a checkpoint, and validate with different statistics.
        """
        if self.accelerator.num_processes == 1:
            return

        for buffer in self.accelerator.unwrap_model(self.model).buffers():
            dist.broadcast(buffer.data, src=0)

    def _maybe_resume(self) -> None:
        """Restore the newest usable checkpoint; damaged newer ones are skipped with a warning."""
        if not self.cfg.resume:
            return
        acc = self.accelerator
        contents = ckpt.read_latest_usable(self.out, warn=None if self.is_main else lambda _: None)
        if contents is None:
            if self.is_main:
                print(f"fastvla train: no checkpoint in {self.out / ckpt.CHECKPOINTS}; starting from scratch")
            return
        path = contents.path
        state, rng_states = ckpt.apply_checkpoint(
            contents,
            model=acc.unwrap_model(self.model),
            optimizer=self.optimizer.optimizer,
            scheduler=self.scheduler,
            scaler=acc.scaler,
        )
        self._check_resumable(state, path)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.samples_seen = int(state["batch_in_epoch"]), int(state["samples_seen"])
        ckpt.restore_rng_state(rng_states[acc.process_index])
        if self.is_main:
            print(f"fastvla train: resumed from {path} (update {self.step}, epoch {self.epoch})")

    def _check_resumable(self, state: Mapping[str, Any], path: Path) -> None:
        now = self.trainer_state()
        keys = ("num_processes", "batch_size", "grad_accum_steps", "seed", "train_episodes")
        diff = {k: (state.get(k), now[k]) for k in keys if state.get(k) != now[k]}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
            raise ValueError(
                f"cannot resume exactly from {path}: the data order depends on settings that changed "
                f"({detail}). Resume with the checkpoint's config.yaml (`fastvla train --config "
                f"{path / ckpt.CONFIG_FILE} --resume`), or start a new run from the exported policy with "
                "--model.checkpoint"
            )

    # ----------------------------------------------------------------------------------------- export
    def export(self) -> Path:
        """Write the final policy folder (model + processor + stats + policy config) atomically."""
        path = self.out / "policy"
        self.check_finite()  # never export a diverged policy
        if self.tp_mesh is not None:  # whole tower weights again on every rank (collective), then save
            unshard_vision(self.accelerator.unwrap_model(self.model))
        if self.is_main:
            factory.export_policy(
                self.accelerator.unwrap_model(self.model), self.processor, self.spec, self.cfg, path
            )
        self.accelerator.wait_for_everyone()
        return path


def _local_world_size(acc: Any) -> int:

    return int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
