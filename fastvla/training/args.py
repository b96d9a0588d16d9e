"""Command-line flags generated from the config dataclasses.

Top-level fields become ``--name`` (underscores as dashes), fields of a section become
``--section.name`` (``--optim.head-lr``), one argument group per section with the field's help text.
Booleans get ``--flag`` / ``--no-flag``, ``Literal`` fields get ``choices`` and tuples take several
values. Flags are only recorded when given, so ``--config run.yaml --steps 50`` takes everything
from the file except ``steps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

from fastvla.training.config import TrainConfig, load_config_dict

_SCALARS = {int: int, float: float, str: str}


def _flag(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _add_field(group: Any, f: dataclasses.Field, hint: Any, prefix: str, default: Any) -> None:
    dest = prefix + f.name
    flag = _flag(prefix, f.name)
    help_text = f.metadata.get("help", "")
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    shown = default
    if hint is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        kw.update(choices=list(args), type=type(args[0]))
    elif origin is tuple:
        elem = args[0]
        kw.update(type=_SCALARS[elem], metavar=elem.__name__.upper())
        kw["nargs"] = len(args) if Ellipsis not in args else "*"
        shown = " ".join(map(str, default)) if default else "(empty)"
    elif hint in _SCALARS:
        kw.update(type=_SCALARS[hint], metavar=hint.__name__.upper())
        if hint is str and default == "":
            shown = "(empty)"
    else:  # pragma: no cover - guards future field types
        raise TypeError(f"no command-line mapping for field {dest} of type {hint}")
    group.add_argument(flag, help=f"{help_text} [default: {shown}]", **kw)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per :class:`TrainConfig` field to ``parser``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON config (e.g. a run's config.yaml); flags given on the command line override it.",
    )
    default = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    run_group = parser.add_argument_group("run")
    sections = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sections.append((f, hint))
            continue
        _add_field(run_group, f, hint, "", getattr(default, f.name))
    for f, cls in sections:
        group = parser.add_argument_group(f.name, cls.__doc__)
        sub_hints = typing.get_type_hints(cls)
        sub_default = getattr(default, f.name)
        for sf in dataclasses.fields(cls):
            _add_field(group, sf, sub_hints[sf.name], f.name + ".", getattr(sub_default, sf.name))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of ``--config`` (if any) overridden by the flags given."""
    data: dict[str, Any] = load_config_dict(args.config) if getattr(args, "config", None) else {}
    hints = typing.get_type_hints(TrainConfig)
    section_names = {name for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    for dest, value in vars(args).items():
        if dest in ("config", "func", "command") or dest.startswith("_"):
            continue
        section, _, name = dest.partition(".")
        if name and section in section_names:
            data.setdefault(section, {})[name] = value
        elif not name and dest in hints:
            data[dest] = value
    return TrainConfig.from_dict(data)
