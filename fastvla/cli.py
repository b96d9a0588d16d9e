"""The ``fastvla`` command line: one sub-command per job.

Each sub-command lives beside the code it drives and is registered here by import path, so
``fastvla --help`` stays fast (heavy libraries are imported only when a command runs).
A module named here exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` and sets
``func`` (a callable taking the parsed ``argparse.Namespace``) as the parser's default.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module defining add_parser(subparsers). Order is the order of `fastvla --help`.
COMMANDS: dict[str, str] = {
    "record": "fastvla.datasets.cli_record",
    "dataset": "fastvla.datasets.cli_dataset",
    "train": "fastvla.training.cli",
    "eval": "fastvla.eval.cli",
    "demo": "fastvla.demo",
    "serve": "fastvla.serving.cli",
    "bench": "fastvla.bench",
    "ros2": "fastvla.ros2.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command whose module is present."""
    parser = argparse.ArgumentParser(
        prog="fastvla", description="Fine-tune and evaluate vision-language-action policies."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # A command whose module is not part of this install (or not written yet) is skipped;
            # a missing third-party dependency *inside* an existing module is a real error.
            if err.name is not None and module_name.startswith(err.name):
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastvla`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
