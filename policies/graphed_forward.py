"""CUDA-graph replay of a model's inference forward, one graph per input-shape signature.

At batch 1 a 7B VLA's chunk forward is a few thousand small kernels; launched eagerly from Python the GPU
waits on the CPU (benchmarks/NOTES.md: 84 ms eager vs 21 ms replayed for the 4-bit model on an H100). The
first call with a new set of input shapes captures the forward (after warm-up runs on a side stream); later
calls with those shapes copy the inputs into the captured buffers and replay. All graphs share one memory
pool, so a few shapes (batch 1 and a vector env's batch, say) cost little extra memory.

Only inputs the forward reads as tensors are captured; a forward that syncs with the host (``.item()``,
data-dependent shapes) cannot be captured, and :class:`GraphedForward` then raises on the first call with the
model's own error attached — callers (``FastVLAPolicy(cuda_graphs="auto")``) fall back to eager.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

Signature = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


class GraphedForward:
    """``fn(**inputs)`` replayed from CUDA graphs keyed by the inputs' names, shapes and dtypes.

    Args:
        fn: the forward, called with keyword tensors; returns a tensor, or an object/dict of tensors.
        warmup: eager runs on a side stream before each capture (lazy initialisation, autotuning).
        max_graphs: capture at most this many shape signatures; others run eagerly.

    Example:
        >>> graphed = GraphedForward(lambda **kw: model(**kw).actions)  # doctest: +SKIP
        >>> actions = graphed(**inputs)  # first call captures, later calls replay  # doctest: +SKIP
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 2, max_graphs: int = 8) -> None:
        self.fn, self.warmup, self.max_graphs = fn, warmup, max_graphs
        self._graphs: dict[Signature, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], Any]] = {}
        self._pool: Any = None

    @staticmethod
    def signature(inputs: Mapping[str, torch.Tensor]) -> Signature:
        """The key a graph is stored under."""
        return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items()))

    @property
    def num_graphs(self) -> int:
        """How many shape signatures have been captured."""
        return len(self._graphs)

    def __call__(self, **inputs: torch.Tensor) -> Any:
        """Replay (capturing first if this shape signature is new); outputs are fresh copies."""
        if not all(isinstance(v, torch.Tensor) and v.is_cuda for v in inputs.values()):
            raise ValueError("GraphedForward needs every input as a CUDA tensor")
        key = self.signature(inputs)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.fn(**inputs)
            entry = self._capture(inputs)
            self._graphs[key] = entry
        graph, static_in, static_out = entry
        for name, value in inputs.items():
            static_in[name].copy_(value)
        graph.replay()
        return _clone(static_out)

    def _capture(self, inputs: Mapping[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor], Any]:
        static_in = {k: v.clone() for k, v in inputs.items()}
        device = next(iter(static_in.values())).device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(max(1, self.warmup)):
                self.fn(**static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(**static_in)
        self._pool = graph.pool()
        return graph, static_in, static_out


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, Mapping):
        return {k: _clone(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_clone(v) for v in out)
    return out
