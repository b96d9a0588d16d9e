"""Serve a policy over the network and query it from a robot computer.

* :class:`~fastvla.serving.server.PolicyServer` / ``fastvla serve``: a websocket server (msgpack with numpy
  arrays) answering observation (+ task) with an action chunk, micro-batching concurrent clients.
* :class:`~fastvla.serving.client.RemotePolicy`: the client, with ``FastVLAPolicy``'s interface.

The protocol is described in :mod:`fastvla.serving.protocol`. Submodules are imported lazily, so
``import fastvla.serving`` does not import websockets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyServer": "fastvla.serving.server",
    "describe_policy": "fastvla.serving.server",
    "RemotePolicy": "fastvla.serving.client",
    "RemotePolicyError": "fastvla.serving.protocol",
    "ServerUnavailableError": "fastvla.serving.protocol",
    "AuthenticationError": "fastvla.serving.protocol",
    "ServerDisconnectedError": "fastvla.serving.protocol",
    "ServerTimeoutError": "fastvla.serving.protocol",
    "MessageTooLargeError": "fastvla.serving.protocol",
    "ServerError": "fastvla.serving.protocol",
    "ServerLimits": "fastvla.serving.limits",
    "tune_malloc": "fastvla.serving.memory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastvla.serving' has no attribute {name!r}")
