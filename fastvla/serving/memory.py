"""Keep glibc from returning large freed blocks to the OS between messages.

Each request allocates a few buffers the size of its images (encode, websocket frame, decode). glibc
serves blocks above its mmap threshold with fresh ``mmap`` calls and trims freed heap memory back to the
OS, so every message pays page faults again: measured here, a 900 KB request spends ~3 ms in them
against ~0.7 ms once large blocks are reused. ``fastvla serve`` calls :func:`tune_malloc` at start-up (it
owns its process); a robot-side client may call it too. Same effect: ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's cap on 64-bit systems


def tune_malloc(keep_bytes: int = 256 * 2**20) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``keep_bytes`` of freed memory mapped.

    Process-wide and irreversible for the process; costs at most ``keep_bytes`` of resident memory that
    the OS would otherwise get back. Returns False (and changes nothing) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(keep_bytes)) == 1 and ok
    logger.debug("mallopt tuning %s", "applied" if ok else "refused")
    return ok
