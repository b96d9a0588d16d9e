"""``fastvla bench NAME``: run a benchmark script from ``benchmarks/`` (source checkouts only).

Every benchmark prints a table and writes JSON (see each script's ``--help``); extra arguments after
the name are passed through, e.g. ``fastvla bench envs --episodes 20``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from fastvla.utils.flags import add_command

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def available() -> list[str]:
    """Names of the benchmark scripts in this checkout."""
    if not BENCHMARKS_DIR.is_dir():
        return []
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if not p.name.startswith("_"))


def run(args: argparse.Namespace) -> int:
    """Run ``benchmarks/<name>.py`` in this process with the remaining arguments."""
    names = available()
    if not names:
        raise SystemExit(
            f"no benchmarks found at {BENCHMARKS_DIR}: `fastvla bench` runs from a source checkout "
            "(git clone + `pip install -e .`)"
        )
    if args.name not in names:
        raise SystemExit(f"unknown benchmark {args.name!r}; available: {names}")
    script = BENCHMARKS_DIR / f"{args.name}.py"
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args.rest]
    sys.path.insert(0, str(BENCHMARKS_DIR))  # as `python benchmarks/NAME.py` does: scripts import _common
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla bench``."""
    parser = add_command(subparsers, "bench", "run a benchmark (table + JSON)", __doc__, run)
    parser.add_argument("name", help=f"benchmark to run: {', '.join(available()) or 'see benchmarks/'}")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmark script")
    return parser
