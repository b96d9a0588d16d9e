"""``fastvla serve``: serve a trained policy over websockets to robot computers and eval loops.

Examples:
    fastvla serve --policy outputs/train/pick_cube            # 127.0.0.1:8000, no token
    FASTVLA_SERVE_TOKEN=s3cret fastvla serve --policy ckpt --host 0.0.0.0 --load-in-4bit
    fastvla eval --policy ws://gpu-box:8000 --env fastvla/PickCube-v0

``--policy`` is a directory saved by training (loaded with ``FastVLAPolicy.from_pretrained``) or
``module:attribute`` naming a policy object or a zero-argument factory returning one.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from fastvla.serving import protocol as P
from fastvla.serving.config import ServeConfig
from fastvla.serving.limits import ServerLimits
from fastvla.utils.flags import add_command, config_from_args

_IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_policy(spec: str, load_in_4bit: bool = False, device: str | None = None) -> Any:
    """Load the policy to serve from a checkpoint directory or a ``module:attribute`` import path.

    Raises:
        ValueError: ``spec`` is neither an existing directory nor ``module:attribute``.
    """
    if Path(spec).is_dir():
        from fastvla.policies import FastVLAPolicy

        return FastVLAPolicy.from_pretrained(spec, load_in_4bit=load_in_4bit, device=device)
    if _IMPORT_SPEC.match(spec):
        module_name, attr = spec.split(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        # A class or a factory is called; an instance (which has predict_action_chunk) is served as is.
        if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "predict_action_chunk")):
            obj = obj()
        return obj
    raise ValueError(
        f"--policy {spec!r} is neither a checkpoint directory nor module:attribute; pass the output "
        "directory of `fastvla train` (or e.g. my_pkg.policies:make_policy)"
    )


def run(cfg: ServeConfig) -> int:
    """Load the policy and serve until interrupted."""
    from fastvla.serving.memory import tune_malloc
    from fastvla.serving.server import PolicyServer

    tune_malloc()  # this process only serves: reuse large message buffers instead of re-faulting them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = load_policy(cfg.policy, load_in_4bit=cfg.load_in_4bit, device=cfg.device)
    server = PolicyServer(
        policy,
        host=cfg.host,
        port=cfg.port,
        token=cfg.token or os.environ.get(P.TOKEN_ENV) or None,
        batch_window_ms=cfg.batch_window_ms,
        limits=cfg.limits,
    )
    server.run()
    return 0


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The :class:`~fastvla.serving.limits.ServerLimits` the command-line flags ask for."""
    return config_from_args(args, ServeConfig).limits


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla serve``."""
    help_text = "serve a policy over websockets (msgpack + numpy)"
    return add_command(subparsers, "serve", help_text, __doc__, run, ServeConfig)
