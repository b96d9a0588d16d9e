"""``fastvla train``'s flags: :mod:`fastvla.utils.flags` applied to :class:`TrainConfig`.

The generator itself moved to :mod:`fastvla.utils.flags` (every command uses it); these names stay for
existing callers and default to :class:`TrainConfig`.
"""

from __future__ import annotations

import argparse

from fastvla.training.config import TrainConfig
from fastvla.utils import flags
from fastvla.utils.flags import handle_config_output, json_object

__all__ = ["add_config_arguments", "config_from_args", "handle_config_output", "json_object"]


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add ``--config``, ``--print-config``, ``--save-config`` and one flag per field of ``cls``."""
    flags.add_config_arguments(parser, cls)


def config_from_args(args: argparse.Namespace, cls: type = TrainConfig) -> TrainConfig:
    """The ``cls`` config of ``--config`` (if any) overridden by the flags given."""
    return flags.config_from_args(args, cls)
