"""CPU offload for small GPUs: AdamW's state, and the activations saved for the backward, in host memory.

* :class:`CPUOffloadAdamW` keeps AdamW's two moments (8 bytes per trainable parameter) and a master copy of
  the trainable weights in CPU memory and runs the update there. Each step copies the gradients to the host
  (pinned buffers, one synchronisation), steps ``torch.optim.AdamW`` on the CPU, and copies the new weights
  back. For LoRA r=32 on a 7B decoder that is ~1 GB of GPU memory freed for ~0.5 GB of copies per update.
  torchao ships a similar prototype (``torchao.optim.CPUOffloadOptimizer``), single-GPU and CUDA-only; this
  one is a plain ``torch.optim.Optimizer`` (learning-rate schedulers, ``state_dict``, Accelerate and the
  gradient scaler work unchanged) and runs on CPU tensors too, so its arithmetic is tested without a GPU.
* :func:`activation_offload` wraps the forward in ``torch.autograd.graph.save_on_cpu(pin_memory=True)``:
  every tensor autograd saves for the backward goes to pinned host memory and comes back when the backward
  needs it. Activation memory drops to what one layer needs, for host-device traffic of the same size.

Neither means anything when the model already lives in CPU memory: the trainer leaves both off on CPU and
says so. Neither can be captured in a CUDA graph as a whole (the host step syncs; ``save_on_cpu`` allocates
fresh pinned buffers every step); :class:`~fastvla.training.graphed_step.GraphedTrainStep` captures the
forward and backward and runs :class:`CPUOffloadAdamW`'s step eagerly, and activation offload runs eagerly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["CPUOffloadAdamW", "activation_offload", "offload_note"]

_HYPER = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")


class CPUOffloadAdamW(torch.optim.Optimizer):
    """AdamW whose state and update live in CPU memory; the parameters stay where they are.

    Args:
        params: parameters or parameter groups, as for ``torch.optim.AdamW``.
        lr: learning rate (a float; schedulers update ``param_groups`` as usual).
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: decoupled weight decay.
        fused: use PyTorch's fused CPU AdamW kernel for the host step (default: yes where supported).

    The arithmetic is ``torch.optim.AdamW``'s, on fp32 (or the parameters' dtype) host copies: on CPU
    parameters this optimiser and ``torch.optim.AdamW(fused=...)`` follow identical trajectories.
    A ``found_inf`` attribute set by a loss scaler (nonzero = skip) is honoured, like fused AdamW's.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = CPUOffloadAdamW(model.parameters(), lr=1e-3)
        >>> model(torch.ones(1, 4)).sum().backward()
        >>> opt.step()
        >>> opt.state_device()
        'cpu'
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False, maximize=False)
        super().__init__(params, defaults)
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        host_groups = []
        for group in self.param_groups:
            copies = []
            for p in group["params"]:
                host = self._host_copy(p)
                self._pairs.append((p, host))
                copies.append(host)
            host_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": copies})
        if fused is None:
            fused = all(h.dtype in (torch.float32, torch.float16, torch.bfloat16) for _, h in self._pairs)
        self.inner = torch.optim.AdamW(host_groups, fused=fused)

    @staticmethod
    def _host_copy(p: torch.Tensor) -> torch.Tensor:
        pin = p.is_cuda  # pinned memory makes the copies asynchronous; it needs a CUDA runtime
        host = torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=pin)
        host.copy_(p.detach())
        host.grad = _host_zeros(host)
        return host

    def state_device(self) -> str:
        """Where the optimiser state is: ``"cpu"`` (``"none"`` before the first step)."""
        devices = {t.device.type for s in self.inner.state.values() for t in s.values() if torch.is_tensor(t)}
        return ",".join(sorted(devices)) or "none"

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Copy gradients to the host, step AdamW there, copy the weights back (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        live = [(p, h) for p, h in self._pairs if p.grad is not None]
        for p, h in live:
            h.grad.copy_(p.grad, non_blocking=True)
        if any(p.is_cuda for p, _ in live):
            torch.cuda.synchronize()  # the gradients (and the last step's weight copies) have landed
        found_inf = getattr(self, "found_inf", None)
        if (
            found_inf is not None and float(found_inf) != 0.0
        ):  # a loss scaler saw inf/NaN: skip, as fused AdamW
            return loss
        for outer, inner in zip(self.param_groups, self.inner.param_groups, strict=True):
            for key in _HYPER:
                value = outer[key]
                inner[key] = float(value) if key == "lr" and torch.is_tensor(value) else value
        grads = {id(h) for _, h in live}
        for _, h in self._pairs:  # parameters without a gradient this step are left alone, as in AdamW
            if id(h) not in grads:
                h.grad = None
        try:
            self.inner.step()
        finally:
            for _, h in self._pairs:
                if h.grad is None:
                    h.grad = _host_zeros(h)
        for p, h in live:
            p.copy_(h, non_blocking=True)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The host AdamW's state (on CPU), with this optimiser's parameter groups (lr, initial_lr, ...)."""
        state = self.inner.state_dict()
        for saved, outer in zip(state["param_groups"], self.param_groups, strict=True):
            saved.update({k: v for k, v in outer.items() if k != "params"})
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; load the model weights first (the host copies come from them)."""
        self.inner.load_state_dict(state_dict)
        for outer, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
            outer.update({k: v for k, v in saved.items() if k in outer and k != "params"})
        self.sync_from_params()

    @torch.no_grad()
    def sync_from_params(self) -> None:
        """Refresh the host master copies from the parameters (after loading weights into the model)."""
        for p, h in self._pairs:
            h.copy_(p.detach())


def _host_zeros(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(like.shape, dtype=like.dtype, device="cpu", pin_memory=like.is_pinned())


@contextlib.contextmanager
def activation_offload(device: torch.device) -> Iterator[None]:
    """Save the tensors autograd keeps for the backward in (pinned) host memory while the block runs.

    Wrap the forward only; the backward brings each tensor back when it needs it.

    Args:
        device: the model's device; pinned buffers are used when it is CUDA.
    """
    with torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda"):
        yield


def offload_note(device: torch.device, optimizer: bool, activations: bool) -> str | None:
    """The line the trainer prints when an offload option is asked for on a CPU run (where it is a no-op)."""
    asked = [name for name, on in (("optimizer", optimizer), ("activations", activations)) if on]
    if not asked or device.type == "cuda":
        return None
    flags = " and ".join(f"--memory.offload-{name}" for name in asked)
    return f"{flags}: this run is on {device.type}, where everything is in host memory already; left off"
