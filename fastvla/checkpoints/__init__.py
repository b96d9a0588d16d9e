"""Checkpoints shipped inside the package (no hub download): ``path("sim-base")``.

``sim-base`` is FastVLA's pretrained base for the built-in tabletop suite: the ``sim-base`` preset trained
from scratch on demonstrations of all five tasks whose instructions never name purple (see its
``README.md`` model card and ``docs/sim_base.md``). Load it like any checkpoint::

    from fastvla.checkpoints import path
    from fastvla.policies import FastVLAPolicy

    policy = FastVLAPolicy.from_pretrained(path("sim-base"), load_in_4bit=True)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())


def path(name: str) -> Path:
    """Folder of the shipped checkpoint ``name`` (loadable with ``from_pretrained``).

    Raises:
        FileNotFoundError: no such checkpoint (the message lists the shipped ones).
    """
    folder = ROOT / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no shipped checkpoint {name!r} in {ROOT}; available: {available()}")
    return folder
