"""Command-line flags generated from a config dataclass, for every ``fastvla`` command.

Top-level fields become ``--name`` (underscores as dashes); fields of a nested config become
``--section.name`` (``--optim.head-lr``) in an argument group of their own, or plain ``--name`` when the
section's field is marked ``flatten``. Booleans get ``--flag`` / ``--no-flag``, ``Literal`` fields get
``choices``, tuples take several values (``str`` ones also comma-separated: ``--cameras front,wrist``),
``dict[str, str]`` fields take ``KEY:=VALUE`` (or ``KEY=VALUE``) items, several, comma-separated or over
repeated flags (``--camera front:=/cam/a --camera wrist:=/cam/b``), other ``dict`` fields a JSON object,
and ``X | None`` fields take an ``X``. A field's ``aliases`` metadata adds other spellings (old flag names
keep working); ``metavar`` names its value in ``--help``.

Flags are only recorded when given, so ``--config run.yaml --steps 50`` takes everything from the file
except ``steps``. Each command also gets ``--print-config`` and ``--save-config FILE``; a field without a
default is required from the command line or the file.

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> from fastvla.utils.config import config_field
    >>> @dataclass
    ... class Demo:
    ...     env: tuple[str, ...] = config_field(help="Env ids.")
    ...     episodes: int = config_field(10, "Episodes per env.", aliases=("--n",))
    >>> parser = argparse.ArgumentParser()
    >>> add_config_arguments(parser, Demo)
    >>> config_from_args(parser.parse_args(["--env", "a,b", "--n", "3"]), Demo)
    Demo(env=('a', 'b'), episodes=3)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from fastvla.utils.config import config_from_dict, dump_config, load_config_dict
from fastvla.utils.io import atomic_write_text

_SCALARS = {int: int, float: float, str: str}
#: Destinations the command line itself uses; never config fields.
_RESERVED = {"config", "print_config", "save_config", "func", "command", "debug"}


def _flag(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object such as ``'{"image_size": 96}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"not valid JSON ({err}): {text!r}; e.g. '{{\"image_size\": 96}}'"
        raise argparse.ArgumentTypeError(msg) from err
    if not isinstance(value, dict):
        msg = f"expected a JSON object like '{{\"image_size\": 96}}', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


class _CommaList(argparse.Action):
    """Collect ``nargs`` values, splitting each on commas (``front,wrist`` == ``front wrist``)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        items = [part.strip() for v in values for part in str(v).split(",") if part.strip()]
        setattr(namespace, self.dest, items)


class _KeyValues(argparse.Action):
    """Merge ``KEY:=VALUE`` / ``KEY=VALUE`` items (several, comma-separated, or over repeated flags) into a
    dict; a JSON object works too. ``:=`` is ROS's remapping syntax, so a value may itself contain ``=``."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        merged = dict(getattr(namespace, self.dest, None) or {})
        for value in values:
            text = str(value).strip()
            if text.startswith("{"):
                try:
                    merged.update({str(k): str(v) for k, v in json_object(text).items()})
                except argparse.ArgumentTypeError as err:
                    raise argparse.ArgumentError(self, str(err)) from err
                continue
            for item in (part.strip() for part in text.split(",")):
                if item:
                    merged.update([self._pair(item)])
        setattr(namespace, self.dest, merged)

    def _pair(self, item: str) -> tuple[str, str]:
        key, sep, value = item.partition(":=")
        if not sep:
            key, sep, value = item.partition("=")
        if not (sep and key.strip() and value.strip()):
            raise argparse.ArgumentError(self, f"{item!r} must be {self.metavar} (or with '=' for ':=')")
        return key.strip(), value.strip()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _add_field(group: Any, f: dataclasses.Field, hint: Any, flag_prefix: str, dest: str) -> None:
    help_text = f.metadata.get("help", "")
    default = _field_default(f)
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    hint, optional = _strip_none(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    shown = "(required)" if default is dataclasses.MISSING else default
    if hint is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        kw.update(choices=list(args), type=type(args[0]))
    elif origin is tuple:
        elem = args[0]
        kw.update(type=_SCALARS[elem], metavar=elem.__name__.upper())
        kw["nargs"] = len(args) if Ellipsis not in args else "*"
        if elem is str and Ellipsis in args:
            kw["action"] = _CommaList
        if isinstance(default, tuple):
            shown = " ".join(map(str, default)) if default else "(empty)"
    elif hint in _SCALARS:
        kw.update(type=_SCALARS[hint], metavar=hint.__name__.upper())
        if hint is str and default == "":
            shown = "(empty)"
    elif origin is dict and args == (str, str):
        kw.update(action=_KeyValues, nargs="+", metavar="KEY:=VALUE")
        if isinstance(default, dict):
            shown = ",".join(f"{k}:={v}" for k, v in default.items()) or "(empty)"
    elif hint is dict or origin is dict:
        kw.update(type=json_object, metavar="JSON")
    else:  # pragma: no cover - guards future field types
        raise TypeError(f"no command-line mapping for field {dest} of type {hint}{' | None' * optional}")
    if "metavar" in f.metadata:
        kw["metavar"] = f.metadata["metavar"]
    flags = [_flag(flag_prefix, f.name), *f.metadata.get("aliases", ())]
    group.add_argument(*flags, help=f"{help_text} [default: {shown}]", **kw)


def _leaves(cls: type, dest_prefix: str = "", flag_prefix: str = "") -> Iterator[tuple[Any, ...]]:
    """``(field, hint, flag_prefix, dest, section)`` of every non-dataclass field, sections after the top."""
    hints = typing.get_type_hints(cls)
    sections = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sections.append(f)
        else:
            yield f, hints[f.name], flag_prefix, dest_prefix + f.name, None
    for f in sections:
        sub_flag = flag_prefix if f.metadata.get("flatten") else f"{flag_prefix}{f.name}."
        for leaf in _leaves(hints[f.name], f"{dest_prefix}{f.name}.", sub_flag):
            yield (*leaf[:4], leaf[4] or (f, hints[f.name]))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config``, ``--print-config``, ``--save-config`` and one flag per field of ``cls``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON config (e.g. from --save-config); flags given on the command line override it.",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument("--save-config", metavar="FILE", help="write the resolved config to FILE and exit")
    groups: dict[str, Any] = {}
    for f, hint, flag_prefix, dest, section in _leaves(cls):
        if f.name in _RESERVED and not flag_prefix:
            raise TypeError(f"config field {dest!r} clashes with a command-line option; rename it")
        if section is None or section[0].metadata.get("flatten"):
            title = "options" if section is None else section[0].name
            group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        else:
            title = section[0].name
            doc = section[1].__doc__
            group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title, doc))
        _add_field(group, f, hint, flag_prefix, dest)


def config_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` config of ``--config`` (if any) overridden by the flags given.

    Raises:
        ValueError: a required field is neither on the command line nor in the file (names the flag).
    """
    data: dict[str, Any] = load_config_dict(args.config) if getattr(args, "config", None) else {}
    given = vars(args)
    for f, _hint, flag_prefix, dest, _section in _leaves(cls):
        path = dest.split(".")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if dest in given:
            node[path[-1]] = given[dest]
        elif _field_default(f) is dataclasses.MISSING and path[-1] not in node:
            raise ValueError(
                f"{_flag(flag_prefix, f.name)} is required (on the command line or as {dest!r} in --config)"
            )
    return config_from_dict(cls, data)


def handle_config_output(args: argparse.Namespace, config: Any) -> bool:
    """Do ``--print-config`` / ``--save-config`` if asked; True when the command should stop there."""
    if getattr(args, "save_config", None):
        path = Path(args.save_config)
        atomic_write_text(path, dump_config(config, yaml_format=path.suffix in (".yaml", ".yml")))
        print(f"wrote {path}")
        return True
    if getattr(args, "print_config", False):
        sys.stdout.write(dump_config(config))
        return True
    return False


def add_command(
    subparsers: Any,
    name: str,
    help: str,
    description: str | None,
    run: Callable[[Any], int] | None,
    config: type | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """Register ``fastvla <name>``: the module docstring as description, examples as epilog.

    With ``config``, the flags are generated from that dataclass and ``run`` is called with the resolved
    config (after ``--print-config`` / ``--save-config``, which stop there); without, ``run`` gets the parsed
    ``argparse.Namespace`` and the caller adds its own arguments to the returned parser (``run=None``: the
    caller's sub-commands set their own).
    """
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if config is None:
        if run is not None:
            parser.set_defaults(func=run)
    else:
        add_config_arguments(parser, config)
        parser.set_defaults(func=functools.partial(_run_with_config, config, run))
    return parser


def _run_with_config(cls: type, run: Callable[[Any], int], args: argparse.Namespace) -> int:
    config = config_from_args(args, cls)
    if handle_config_output(args, config):
        return 0
    return run(config)
