"""ROS 2's wire format: plain CDR (XCDR1, ``@final`` types), little-endian, as ``rmw_cyclonedds_cpp`` writes.

A serialized ROS 2 message is a 4-byte encapsulation header (``00 01 00 00`` = CDR little-endian) followed
by the fields in declaration order. Each primitive is aligned to its own size (at most 8) relative to the
first byte after the header; strings are a ``uint32`` length that counts the trailing NUL, the UTF-8 bytes
and the NUL; sequences are a ``uint32`` element count followed by the elements. Nested messages are
inlined with no header of their own. ``rosbags.typesys`` implements the same rules (``serialize_cdr``), and
``tests/ros2/test_msgs.py`` checks every message type against it byte for byte.

Large payloads (image bytes, float arrays) are copied in one piece through numpy, not element by element.
"""

from __future__ import annotations

import struct

import numpy as np

CDR_LE = b"\x00\x01\x00\x00"
CDR_BE = b"\x00\x00\x00\x00"
_HEADER = 4


class CdrError(ValueError):
    """A payload that is not a valid plain-CDR encoding of the expected message type."""


class CdrWriter:
    """Append-only little-endian plain-CDR encoder (header included)."""

    def __init__(self) -> None:
        self.buf = bytearray(CDR_LE)

    def align(self, size: int) -> None:
        """Pad with zeros so the next write starts at a multiple of ``size`` after the header."""
        pad = -(len(self.buf) - _HEADER) % size
        if pad:
            self.buf += b"\x00" * pad

    def primitive(self, fmt: str, value: float | int) -> None:
        """Write one primitive; ``fmt`` is a ``struct`` code (``B``, ``i``, ``I``, ``d``, ...)."""
        size = struct.calcsize(fmt)
        self.align(size)
        self.buf += struct.pack("<" + fmt, value)

    def string(self, value: str) -> None:
        """Write a string: uint32 length (with the NUL), UTF-8 bytes, NUL."""
        data = value.encode("utf-8")
        self.primitive("I", len(data) + 1)
        self.buf += data
        self.buf += b"\x00"

    def octets(self, value: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Write a ``uint8[]`` sequence from any buffer of bytes."""
        data = value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
        self.primitive("I", len(data))
        self.buf += data

    def fixed_octets(self, value: bytes | bytearray | memoryview, n: int) -> None:
        """Write a fixed-size ``uint8[n]`` array (no length prefix, no alignment)."""
        data = bytes(value)
        if len(data) != n:
            raise ValueError(f"a uint8[{n}] field needs {n} bytes, got {len(data)}")
        self.buf += data

    def array(self, value: np.ndarray | list[float], dtype: str) -> None:
        """Write a sequence of a numeric type (``dtype`` a little-endian numpy code, e.g. ``'<f8'``)."""
        arr = np.ascontiguousarray(value, dtype=dtype).reshape(-1)
        self.primitive("I", arr.size)
        if arr.size:
            self.align(arr.dtype.itemsize)
            self.buf += arr.tobytes()

    def getvalue(self) -> bytes:
        """The encoded message, header included."""
        return bytes(self.buf)


class CdrReader:
    """Plain-CDR decoder over a payload that starts with its encapsulation header (either byte order)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data).cast("B")
        if len(self.data) < _HEADER:
            raise CdrError(f"CDR payload of {len(self.data)} bytes is shorter than its 4-byte header")
        header = bytes(self.data[:_HEADER])
        if header[:2] == CDR_LE[:2]:
            self.order = "<"
        elif header[:2] == CDR_BE[:2]:
            self.order = ">"
        else:
            raise CdrError(
                f"unsupported encapsulation {header[:2].hex()}: expected plain CDR (0001 little-endian or "
                "0000 big-endian) as ROS 2 RMW layers write it; XCDR2 payloads are not ROS 2 messages"
            )
        self.pos = _HEADER

    def align(self, size: int) -> None:
        """Skip the padding before a value of ``size`` bytes."""
        self.pos += -(self.pos - _HEADER) % size

    def _take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise CdrError(f"CDR payload truncated: need {end} bytes, have {len(self.data)}")
        view = self.data[self.pos : end]
        self.pos = end
        return view

    def primitive(self, fmt: str) -> int | float:
        """Read one primitive (``struct`` code)."""
        size = struct.calcsize(fmt)
        self.align(size)
        return struct.unpack(self.order + fmt, self._take(size))[0]

    def string(self) -> str:
        """Read a string (length includes the NUL terminator)."""
        n = int(self.primitive("I"))
        if n == 0:  # tolerated: some writers send an empty string as length 0
            return ""
        raw = bytes(self._take(n))
        return raw[:-1].decode("utf-8") if raw[-1:] == b"\x00" else raw.decode("utf-8")

    def octets(self) -> bytes:
        """Read a ``uint8[]`` sequence as ``bytes``."""
        n = int(self.primitive("I"))
        return bytes(self._take(n))

    def fixed_octets(self, n: int) -> bytes:
        """Read a fixed-size ``uint8[n]`` array (no length prefix, no alignment)."""
        return bytes(self._take(n))

    def array(self, dtype: str) -> np.ndarray:
        """Read a numeric sequence as a numpy array in native byte order (``dtype`` e.g. ``'<f8'``)."""
        dt = np.dtype(dtype).newbyteorder(self.order)
        n = int(self.primitive("I"))
        if n == 0:
            return np.zeros(0, dtype=dt.newbyteorder("="))
        self.align(dt.itemsize)
        raw = self._take(n * dt.itemsize)
        return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="), copy=True)
