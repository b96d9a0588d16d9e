"""Closed-loop evaluation during training: an ``eval_hook`` for :func:`fastvla.training.train`.

It lives with the evaluation, not in the training core: the Trainer calls whatever hook it is given and
imports neither the envs nor the evaluation.

Example:
    >>> from fastvla.training import TrainConfig, train
    >>> from fastvla.eval.hooks import closed_loop_eval_hook
    >>> hook = closed_loop_eval_hook("fastvla/PickCube-v0", n_episodes=10)  # doctest: +SKIP
    >>> train(TrainConfig(..., eval_every=500), eval_hook=hook)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastvla.eval.rollout import evaluate
from fastvla.policies import FastVLAPolicy


def closed_loop_eval_hook(
    env: Any,
    n_episodes: int = 10,
    batch_size: int = 1,
    seed: int = 0,
    policy_kwargs: Mapping[str, Any] | None = None,
    max_videos: int = 2,
    **evaluate_kwargs: Any,
) -> Callable[..., dict[str, float]]:
    """An eval hook that rolls the in-training model out with :func:`fastvla.eval.evaluate`.

    Each call wraps the live model and processor in a :class:`~fastvla.policies.FastVLAPolicy` (no copy,
    no reload) and writes the report and videos to ``<output_dir>/eval/step_<N>``.

    Args:
        env: what :func:`fastvla.eval.evaluate` accepts: a Gymnasium id, an env factory, or an open vector
            env (reused across calls, which saves env start-up time).
        n_episodes: episodes per evaluation (episode ``i`` is reset with ``seed + i``, so every
            evaluation sees the same initial states).
        batch_size: envs stepped in parallel.
        seed: seed of episode 0.
        policy_kwargs: extra :class:`FastVLAPolicy` arguments (``obs_map``, ``n_action_steps``, ...).
        max_videos: videos written per evaluation.
        **evaluate_kwargs: passed to :func:`fastvla.eval.evaluate`.

    Returns:
        ``hook(step=, model=, processor=, output_dir=) -> {"success_rate": ..., "mean_return": ...}``.
    """

    def hook(*, step: int, model: Any, processor: Any, output_dir: Path, **_: Any) -> dict[str, float]:
        device = next(model.parameters()).device
        policy = FastVLAPolicy(model, processor, device=device, **dict(policy_kwargs or {}))
        result = evaluate(
            policy,
            env,
            n_episodes=n_episodes,
            batch_size=batch_size,
            seed=seed,
            out_dir=Path(output_dir) / "eval" / f"step_{step:08d}",
            max_videos=max_videos,
            progress=False,
            **evaluate_kwargs,
        )
        metrics = {"success_rate": float(result.success_rate)}
        for name in ("mean_return", "mean_length"):
            value = getattr(result, name, None)
            if isinstance(value, (int, float)):
                metrics[name] = float(value)
        return metrics

    return hook
