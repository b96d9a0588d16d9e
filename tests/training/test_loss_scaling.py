"""Loss scaling inside the graphed update (the fp16 / T4 path), checked on CPU with the same kernels.

``GraphedTrainStep`` with a scaler runs, without capture, exactly the ops it captures on a GPU: the scaled
backward, ``_amp_foreach_non_finite_check_and_unscale_``, fused AdamW with ``found_inf``, and
``_amp_update_scale_``. These tests hold it to ``torch.amp.GradScaler``'s eager semantics.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fastvla.training.graphed_step import GraphedTrainStep
from fastvla.training.offload import CPUOffloadAdamW

from ._graphed_toy import Toy, batch


class _Poison:
    """A gradient hook that turns one parameter's gradient into inf while ``on``."""

    def __init__(self, param: torch.nn.Parameter) -> None:
        self.on = False
        param.register_hook(lambda g: g * float("inf") if self.on else g)


def _scaler(**kw) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3, **kw)


def _graphed(model: Toy, scaler: torch.amp.GradScaler | None, opt_cls=None) -> GraphedTrainStep:
    opt = (opt_cls or torch.optim.AdamW)(model.parameters(), lr=1e-2)
    return GraphedTrainStep(model, opt, batch(0), autocast_dtype=None, capture=False, scaler=scaler)


def _eager_reference(model: Toy, scaler: torch.amp.GradScaler, poison: _Poison, bad: set[int]) -> list:
    """torch.amp.GradScaler + fused AdamW, eagerly: (params, scale, optimizer step) after each update."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    trace = []
    for u in range(8):
        poison.on = u in bad
        loss = model(**batch(u)).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step = next(iter(opt.state.values()))["step"] if opt.state else torch.tensor(0.0)
        trace.append(([p.detach().clone() for p in model.parameters()], scaler.get_scale(), float(step)))
    return trace


def test_scaled_update_matches_gradscaler_with_skips_and_growth() -> None:
    """Updates 2 and 3 overflow (skipped, scale halved twice); 3 clean updates later the scale doubles."""
    torch.manual_seed(0)
    ours, ref = Toy(), None
    ref = copy.deepcopy(ours)
    bad = {2, 3}
    expected = _eager_reference(ref, _scaler(), _Poison(ref.net[0].weight), bad)
    poison = _Poison(ours.net[0].weight)
    step = _graphed(ours, _scaler())
    for u, (params, scale, opt_step) in enumerate(expected):
        poison.on = u in bad
        before = [p.detach().clone() for p in ours.parameters()]
        step.update([batch(u)])
        after = list(ours.parameters())
        if u in bad:  # skipped: the weights did not move
            assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
        for got, want in zip(after, params, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
        assert step.scaler.get_scale() == scale
        state = step.optimizer.state[next(iter(ours.parameters()))]
        assert float(state["step"]) == opt_step  # fused AdamW undid the step count of skipped updates
    assert float(step.skipped_updates) == len(bad)
    assert [s for _, s, _ in expected][:5] == [1024.0, 1024.0, 512.0, 256.0, 256.0]


def test_power_of_two_scaling_does_not_change_the_update() -> None:
    torch.manual_seed(1)
    a = Toy()
    b = copy.deepcopy(a)
    scaled, plain = _graphed(a, _scaler()), _graphed(b, None)
    plain.optimizer.param_groups[0]["fused"] = True  # the same kernel as the scaled update
    losses = [(float(scaled.update([batch(u)])[0]), float(plain.update([batch(u)])[0])) for u in range(5)]
    assert [x for x, _ in losses] == [y for _, y in losses]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_offloaded_optimizer_skips_like_fused_adamw() -> None:
    """CPUOffloadAdamW in the graphed update (its step runs eagerly) follows the same scaled trajectory."""
    torch.manual_seed(2)
    a = Toy()
    b = copy.deepcopy(a)
    poisons = [_Poison(a.net[0].weight), _Poison(b.net[0].weight)]
    fused, offload = _graphed(a, _scaler()), _graphed(b, _scaler(), CPUOffloadAdamW)
    assert fused.step_in_graph and not offload.step_in_graph
    for u in range(6):
        for poison in poisons:
            poison.on = u == 1
        fused.update([batch(u)])
        offload.update([batch(u)])
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
        assert fused.scaler.get_scale() == offload.scaler.get_scale()
    assert offload.optimizer.state_device() == "cpu"


def test_disabled_scaler_is_refused() -> None:
    with pytest.raises(ValueError, match="disabled"):
        _graphed(Toy(), torch.amp.GradScaler("cpu", enabled=False))
