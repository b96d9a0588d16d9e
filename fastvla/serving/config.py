"""The config of ``fastvla serve``: :class:`ServeConfig` (which policy, where, and the server's limits).

The command's flags are generated from these fields (:mod:`fastvla.utils.flags`); the limits are
flattened (``--max-connections``, not ``--limits.max-connections``) and nest under ``limits:`` in a
``--config`` file.

Example:
    >>> cfg = ServeConfig(policy="outputs/train/pick", port=9000)
    >>> cfg.host, cfg.limits.max_connections
    ('127.0.0.1', 16)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastvla.serving import protocol as P
from fastvla.serving.limits import ServerLimits
from fastvla.utils.config import ConfigMixin, check, config_field, nested_from_dicts


@dataclass
class ServeConfig(ConfigMixin):
    """``fastvla serve``: a policy served over websockets (msgpack + numpy)."""

    policy: str = config_field(help="Checkpoint directory or module:attribute (an object or a factory).")
    host: str = config_field("127.0.0.1", "Interface to bind (default: loopback only).")
    port: int = config_field(P.DEFAULT_PORT, "TCP port (0: any free port).")
    token: str | None = config_field(
        None,
        f"Shared secret clients must send; None = ${P.TOKEN_ENV} (prefer the variable: command lines are "
        "visible to other users, and --save-config would write the token to a file).",
    )
    load_in_4bit: bool = config_field(False, "Load the model with NF4 weights.")
    device: str | None = config_field(None, "Torch device; None = cuda if available.")
    batch_window_ms: float = config_field(
        2.0, "How long to wait for other clients' requests to batch with, in milliseconds."
    )
    limits: ServerLimits = field(
        default_factory=ServerLimits, metadata={"help": "Limits (see docs/serving.md)", "flatten": True}
    )

    def __post_init__(self) -> None:
        nested_from_dicts(self)
        check(0 <= self.port < 65536, f"port={self.port} (--port); must be in [0, 65535]")
        check(self.batch_window_ms >= 0, f"batch_window_ms={self.batch_window_ms}; must be >= 0")
