"""The FastVLA policy-server protocol: message types, error codes and the client-side exceptions.

Every frame is one binary websocket message holding one msgpack map (see :mod:`fastvla.serving.codec`).
Requests carry a client-chosen integer ``id`` that the reply repeats.

============  ===========================================================  ===============================
request       fields                                                       reply
============  ===========================================================  ===============================
``ping``      ``id``                                                       ``pong`` + ``timing``
``metadata``  ``id``                                                       ``metadata`` + ``metadata`` map
``infer``     ``id``, ``obs`` (map of arrays, nested), ``task`` (None,     ``action_chunk`` + ``actions``
              str or list of str), ``batched`` (None/bool, optional),      ((T, A) or (B, T, A)) +
              ``return`` (``"chunk"`` default, or ``"action"``)             ``timing``; or ``action``
============  ===========================================================  ===============================

Any request may instead get ``{"type": "error", "id", "code", "message"}``; the connection stays open.
``bad_request`` means the request was refused before reaching the policy (malformed, over a limit, NaN/inf,
not the observation the policy declared); ``policy_error`` means the policy itself raised.
The handshake is refused with HTTP 401 (token) or 503 (connection limit); a frame over the size limit
closes the connection with code 1009, an idle connection is closed with code 1000 and reason
:data:`IDLE_CLOSE_REASON`.
The server is stateless: it only calls ``policy.predict_action_chunk``; the client keeps the action queue.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
"""Bumped on incompatible changes; the client refuses a server with another major version."""

DEFAULT_PORT = 8000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
"""16 MiB: a batch of ~16 observations with two 224x224 cameras, or ~10 with one 480x640 camera."""

TOKEN_ENV = "FASTVLA_SERVE_TOKEN"
"""Environment variable read by the server and the client when no token is passed explicitly."""

HEALTH_PATH = "/healthz"

IDLE_CLOSE_REASON = "idle timeout"
"""Reason of the close frame (code 1000) the server sends to a connection idle for ``idle_timeout_s``;
the client reconnects on its next request."""

# Request types.
PING = "ping"
METADATA = "metadata"
INFER = "infer"
# Reply types.
PONG = "pong"
ACTION_CHUNK = "action_chunk"
ACTION = "action"
ERROR = "error"

# Error codes.
BAD_REQUEST = "bad_request"
POLICY_ERROR = "policy_error"
SERVER_ERROR = "server_error"


class RemotePolicyError(RuntimeError):
    """Base class of every error :class:`~fastvla.serving.client.RemotePolicy` raises."""


class ServerUnavailableError(RemotePolicyError):
    """The server could not be reached (refused, wrong address, handshake timeout)."""


class AuthenticationError(RemotePolicyError):
    """The server rejected the shared token (HTTP 401)."""


class ServerDisconnectedError(RemotePolicyError):
    """The connection dropped while a request was outstanding (server killed, network cut)."""


class ServerTimeoutError(RemotePolicyError):
    """No reply arrived within the client's timeout."""


class MessageTooLargeError(RemotePolicyError):
    """A message exceeds the server's ``max_message_bytes``."""


class ServerError(RemotePolicyError):
    """The server answered with an error reply (bad request, policy exception).

    Attributes:
        code: The protocol error code (``bad_request``, ``policy_error``, ``server_error``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
