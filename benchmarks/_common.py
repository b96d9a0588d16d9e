"""What the benchmark scripts share: the argument parser, the JSON result file, a tiny untrained policy.

The scripts import it as ``_common``: ``python benchmarks/NAME.py`` puts this folder on ``sys.path``, and
``fastvla bench NAME`` does the same. Only the standard library is imported at module level, because some
scripts also run in environments without FastVLA (``ros2_rclpy.py --role robot`` runs in a ROS venv).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` shows the script's docstring ``doc`` as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


#: ``fastvla`` as a command of this interpreter (the scripts' subprocesses run the same install).
FASTVLA = [sys.executable, "-m", "fastvla"]


def run_fastvla(cmd: list[str], record: Callable[[str], Any]) -> None:
    """Print ``cmd`` as the user would type it (``fastvla ...``), hand that text to ``record``, run it.

    Raises:
        subprocess.CalledProcessError: the command failed.
    """
    text = shlex.join(["fastvla", *cmd[len(FASTVLA) :]] if cmd[: len(FASTVLA)] == FASTVLA else cmd)
    print(f"$ {text}", flush=True)
    record(text)
    subprocess.run(cmd, check=True)


def write_json(path: str | os.PathLike, result: Any, indent: int = 2) -> Path:
    """Write ``result`` as JSON to ``path`` atomically (folders created), ending with a newline."""
    from fastvla.utils.io import atomic_write_text  # deferred: see the module docstring

    path = Path(path)
    atomic_write_text(path, json.dumps(result, indent=indent) + "\n")
    return path


def render_section(targets: list[Path], name: str, body: str) -> list[Path]:
    """Replace the text between ``<!-- NAME:begin ... -->`` and ``<!-- NAME:end -->`` (each on its own line)
    in each target that holds the begin marker (its comment says which command generates the section);
    returns the files changed. Targets without the begin marker are left alone.

    Raises:
        ValueError: a target has the begin marker but not the end marker after it.
    """
    begin = f"<!-- {name}:begin"
    pattern = re.compile(rf"({re.escape(begin)}[^>]*-->\n).*?(\n<!-- {re.escape(name)}:end -->)", re.S)
    changed = []
    for target in targets:
        text = target.read_text()
        if begin not in text:
            continue
        if not pattern.search(text):
            raise ValueError(
                f"{target}: the generated section has no end marker; add the line <!-- {name}:end --> "
                "where it ends"
            )
        new = pattern.sub(lambda m: m.group(1) + body + m.group(2), text, count=1)
        if new != text:
            from fastvla.utils.io import atomic_write_text  # deferred: see the module docstring

            atomic_write_text(target, new)
            changed.append(target)
    return changed


def save_tiny_policy(path: Path, image_size: int, state_dim: int) -> Path:
    """Save an untrained ``tiny`` FastVLA policy to ``path``: cameras front + wrist at ``image_size``²,
    ``state_dim``-D state, 7-D actions in chunks of 8, identity normalisation; for timing real inference."""
    import torch  # deferred: start-up time of the scripts that never build a model

    from fastvla.model import FastVLAModel, FastVLAProcessor

    torch.manual_seed(0)
    kw = {"cameras": ["front", "wrist"], "state_dim": state_dim, "action_dim": 7, "chunk_size": 8}
    model = FastVLAModel.from_preset("tiny", image_size=image_size, **kw)
    stats = {
        "observation.state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"min": [-1.0] * 7, "max": [1.0] * 7},
    }
    FastVLAProcessor.from_preset("tiny", config=model.config, stats=stats).save_pretrained(path)
    model.save_pretrained(path)
    return path
