"""``python -m fastvla.ros2 ...`` = ``fastvla ros2 ...``, without loading the other sub-commands."""

import argparse
import sys

from fastvla.ros2.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as ``fastvla ros2`` arguments and run the bridge."""
    parser = argparse.ArgumentParser(prog="python -m fastvla.ros2")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["ros2", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
