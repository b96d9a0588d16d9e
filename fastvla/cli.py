"""The ``fastvla`` command line: one sub-command per job.

Each sub-command lives beside the code it drives and is registered here by import path, so
``fastvla --help`` stays fast (heavy libraries are imported only when a command runs).
A module named here exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` and sets
``func`` (a callable taking the parsed ``argparse.Namespace``) as the parser's default.

User errors (a missing path, a malformed dataset, a bad flag value; the list is in :mod:`fastvla.errors`)
print one line ``fastvla <cmd>: error: <message>`` and exit with status 2; other exceptions are bugs and
keep their traceback. ``--debug`` (before or after the command) or ``FASTVLA_DEBUG=1`` shows the
traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fastvla.errors import debug_enabled, format_user_error, user_errors

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
    debug_help = "show the full traceback of errors (also: FASTVLA_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
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
        _add_debug_flag(module.add_parser(sub), debug_help)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--debug`` on a command and its actions too (``fastvla dataset info X --debug``).

    ``SUPPRESS``: a sub-parser that does not see the flag leaves the top-level value in place.
    """
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_debug_flag(child, help_text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastvla`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except user_errors() as err:
        if debug_enabled(args.debug):
            raise
        print(f"fastvla {args.command}: error: {format_user_error(err)}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
