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
        max_message_bytes=args.max_message_bytes,
        batch_window_ms=args.batch_window_ms,
        max_batch_size=args.max_batch_size,
    )
    server.run()
    return 0


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
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=P.DEFAULT_MAX_MESSAGE_BYTES,
        help="largest accepted request in bytes (default: %(default)s)",
    )
    parser.add_argument("--load-in-4bit", action="store_true", help="load the model with NF4 weights")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=2.0,
        help="how long to wait for other clients' requests to batch with (default: %(default)s)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="most observations per policy call")
    parser.set_defaults(func=run)
    return parser
