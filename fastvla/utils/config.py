"""Config dataclasses: documented fields, validation helpers and JSON/YAML round trips.

Every command's config (``TrainConfig``, ``EvalConfig``, ``RecordConfig``, ``ServeConfig``) is a dataclass
whose fields carry their documentation in ``metadata["help"]``; :mod:`fastvla.utils.flags` turns the same
fields into command-line flags. :class:`ConfigMixin` gives each of them ``to_dict``/``from_dict``/``save``/
``load``. Nested dataclass fields become nested mappings (``{"optim": {"lr": ...}}``).

This module imports neither torch nor transformers, so ``fastvla --help`` stays fast.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo(ConfigMixin):
    ...     steps: int = config_field(10, "Updates to run.")
    ...     cameras: tuple[str, ...] = config_field(("front",), "Cameras by name.")
    >>> Demo.from_dict({"cameras": ["wrist"]})
    Demo(steps=10, cameras=('wrist',))
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from fastvla.utils.io import atomic_write_text

C = TypeVar("C")


def config_field(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field with its documentation (shown by ``--help``).

    Args:
        default: The default (a tuple for sequences); leave it out for a required field.
        help: One-sentence documentation.
        **metadata: Extra command-line hints: ``aliases`` (other flag spellings, e.g. ``("--out",)``),
            ``flatten`` (a nested config whose flags carry no ``section.`` prefix), ``metavar`` (the value's
            name in ``--help``, e.g. ``"NAME:=TOPIC"``).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default for sequence fields (or None for a mapping)")
    return field(default=default, metadata={"help": help, **metadata})


def check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok`` (validation in ``__post_init__``)."""
    if not ok:
        raise ValueError(message)


def load_config_dict(path: str | Path) -> dict[str, Any]:
    """The raw dict of a YAML (``.yaml``/``.yml``) or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def config_from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build (and validate) a ``cls`` from a nested dict; unknown keys are an error naming the valid ones.

    A field's ``aliases`` are accepted as keys too (``--camera-keys`` as ``camera_keys``), so files written
    before a field was renamed still load.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    renamed = {
        alias.lstrip("-").replace("-", "_"): f.name
        for f in dataclasses.fields(cls)
        for alias in f.metadata.get("aliases", ())
    }
    data = {renamed.get(key, key): value for key, value in data.items()}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; valid: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value, prefix=f"{prefix}{name}.")
        elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists), JSON/YAML serialisable."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def dump_config(config: Any, yaml_format: bool = True) -> str:
    """The config as YAML (default) or indented JSON text."""
    if yaml_format:
        import yaml

        return yaml.safe_dump(config_to_dict(config), sort_keys=False)
    return json.dumps(config_to_dict(config), indent=2) + "\n"


class ConfigMixin:
    """``to_dict``/``from_dict``/``save``/``load`` for a config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), JSON/YAML serialisable."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build (and validate) a config from a nested dict; unknown keys are an error."""
        return config_from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        """Write the config atomically as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        atomic_write_text(path, dump_config(self, yaml_format=path.suffix in (".yaml", ".yml")))

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a config written by :meth:`save` (or by hand; missing fields take their defaults)."""
        return config_from_dict(cls, load_config_dict(path))


def nested_from_dicts(config: Any) -> None:
    """In ``__post_init__``: turn nested config fields given as dicts into their dataclasses."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            setattr(config, f.name, config_from_dict(hints[f.name], value, prefix=f"{f.name}."))
