"""Where training metrics go: a progress bar, ``metrics.jsonl``, TensorBoard event files and (optionally) W&B.

Only the main process logs. Metrics arrive every ``log_every`` updates as plain floats — the loop never
calls ``.item()`` in between, so logging costs no host-device sync per step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class Tracker:
    """Progress bar + ``<log_dir>/metrics.jsonl`` + TensorBoard + wandb behind one ``log(step, metrics)``.

    ``metrics.jsonl`` holds one JSON object per logged step (``{"step": 100, "train/loss": ...}``), appended
    and flushed as it goes: readable with no TensorBoard, by scripts and by ``tail -f``.

    Args:
        log_dir: folder of the TensorBoard event files.
        total_steps: length of the progress bar.
        initial_step: where the bar starts (resumed runs).
        enabled: ``False`` on non-main processes (everything becomes a no-op).
        tensorboard: write event files.
        progress: show the bar.
        wandb_project: log to this W&B project too (empty = off).
        run_config: the run's config, stored with the W&B run.
    """

    def __init__(
        self,
        log_dir: Path,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        wandb_project: str = "",
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        self._bar = None
        self._jsonl = None
        if not enabled:
            return
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._jsonl = open(Path(log_dir) / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # deferred: optional dependency (tensorboard)

            self._tb = SummaryWriter(log_dir=str(log_dir))
        if wandb_project:
            try:
                import wandb  # deferred: optional dependency (wandb)
            except ImportError as err:
                raise RuntimeError(
                    f"--wandb-project {wandb_project!r} needs Weights & Biases: `pip install wandb` "
                    "(or `pip install fastvla[wandb]`), or drop the flag"
                ) from err
            self._wandb = wandb.init(project=wandb_project, config=dict(run_config or {}), dir=str(log_dir))
        if progress:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True
            )

    def advance(self, n: int = 1) -> None:
        """Move the progress bar (cheap; no metrics)."""
        if self._bar is not None:
            self._bar.update(n)

    def log(self, step: int, metrics: Mapping[str, float], show: Mapping[str, str] | None = None) -> None:
        """Record ``metrics`` (names like ``train/loss``) at update ``step``; ``show`` goes in the bar."""
        if not self.enabled:
            return
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)
        if self._bar is not None and show:
            self._bar.set_postfix(show, refresh=False)
        elif self._bar is None and show:
            print(f"step {step}: " + " ".join(f"{k}={v}" for k, v in show.items()), flush=True)

    def message(self, text: str) -> None:
        """A line of text that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Flush and close every sink."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._bar is not None:
            self._bar.close()
