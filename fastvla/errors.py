"""Exceptions that mean "the user asked for something that cannot work", in one place.

The ``fastvla`` command line prints these as one line, ``fastvla <cmd>: error: <message>``, and exits with
status 2 (what argparse does for a bad flag); any other exception is a bug and keeps its traceback.
``fastvla --debug ...`` (or ``FASTVLA_DEBUG=1``) shows the traceback of user errors too.

What counts as a user error:

* :class:`UserError` and its subclasses (:class:`CheckpointError`, :class:`NonFiniteError`);
* a missing or misplaced path: ``FileNotFoundError``, ``FileExistsError``, ``NotADirectoryError``,
  ``IsADirectoryError``, ``PermissionError``;
* ``ValueError``: config validation (``__post_init__``), bad flag values, and the datasets'
  ``DatasetFormatError`` and ``FrameValidationError`` (both ``ValueError`` subclasses);
* ``KeyError``: a name looked up in an observation, a registry or a dataset that is not there (the
  lookups in FastVLA raise it with a message listing what is available);
* the datasets' ``VideoDecodeError`` (a broken or unsupported video file).
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "UserError",
    "debug_enabled",
    "format_user_error",
    "user_errors",
]


class UserError(Exception):
    """Base of FastVLA's own errors that a user causes and can fix (the message says how)."""


class CheckpointError(UserError, ValueError):
    """A training checkpoint is incomplete, corrupt or unusable (the message names the file and why)."""


class NonFiniteError(UserError, RuntimeError):
    """A loss, weight or prediction became NaN or infinite (the message says where and what to try)."""


_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types the command line reports without a traceback (see the module docstring)."""
    kinds: list[type[BaseException]] = [UserError, *_PATH_ERRORS, ValueError, KeyError]
    # Only a loaded module can have raised its error: no import (of PyAV) just to build this tuple.
    video = sys.modules.get("fastvla.datasets.video")
    if video is not None:
        kinds.append(video.VideoDecodeError)
    return tuple(kinds)


def format_user_error(err: BaseException) -> str:
    """The one-line message of a user error (``KeyError``'s quotes and ``OSError``'s errno left out)."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    elif isinstance(err, OSError) and err.strerror and err.filename is not None and len(err.args) == 2:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line, whatever the message's own layout


def debug_enabled(flag: bool = False) -> bool:
    """``--debug`` given, or ``FASTVLA_DEBUG`` set to anything but ``""``/``0``/``false``/``no``."""
    return flag or os.environ.get("FASTVLA_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
