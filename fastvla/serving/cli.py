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


def run(args: argparse.Namespace) -> int:
    """Load the policy and serve until interrupted."""
    from fastvla.serving.memory import tune_malloc
    from fastvla.serving.server import PolicyServer

    tune_malloc()  # this process only serves: reuse large message buffers instead of re-faulting them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = load_policy(args.policy, load_in_4bit=args.load_in_4bit, device=args.device)
    server = PolicyServer(
        policy,
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get(P.TOKEN_ENV) or None,
        batch_window_ms=args.batch_window_ms,
        limits=limits_from_args(args),
    )
    server.run()
    return 0


def limits_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~fastvla.serving.limits.ServerLimits` the command-line flags ask for."""
    from dataclasses import fields

    from fastvla.serving.limits import ServerLimits

    return ServerLimits(**{f.name: getattr(args, f.name) for f in fields(ServerLimits)})


# flag -> (type, help); defaults come from ServerLimits so the CLI and the Python API cannot drift.
_LIMIT_FLAGS = {
    "max_message_bytes": (int, "largest accepted request frame in bytes; larger ones close the connection"),
    "max_batch_size": (int, "most observations per request (larger: bad_request) and per policy call"),
    "max_array_bytes": (int, "largest single array in an observation, in bytes"),
    "max_image_pixels": (int, "largest H*W of one image per sample"),
    "max_queue": (int, "frames a connection may buffer while its previous request is answered"),
    "max_connections": (int, "open websocket connections; more are refused with HTTP 503"),
    "idle_timeout_s": (float, "close connections that send no complete message for this long"),
    "handshake_timeout_s": (float, "time a new connection has to complete the websocket handshake"),
    "auth_log_interval_s": (float, "at most one warning per this many seconds for rejected logins"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fastvla serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a policy over websockets (msgpack + numpy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", required=True, help="checkpoint directory or module:attribute")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=P.DEFAULT_PORT, help="TCP port (0: any free port)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"shared secret clients must send (default: ${P.TOKEN_ENV}; prefer the variable, "
        "command lines are visible to other users)",
    )
    parser.add_argument("--load-in-4bit", action="store_true", help="load the model with NF4 weights")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=2.0,
        help="how long to wait for other clients' requests to batch with (default: %(default)s)",
    )
    from fastvla.serving.limits import ServerLimits

    defaults = ServerLimits()
    limits = parser.add_argument_group("limits (see docs/serving.md)")
    for name, (kind, text) in _LIMIT_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        limits.add_argument(
            flag, type=kind, default=getattr(defaults, name), help=f"{text} (default: %(default)s)"
        )
    parser.set_defaults(func=run)
    return parser
