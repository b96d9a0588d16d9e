"""Msgpack with numpy arrays, without pickle.

Arrays travel as a msgpack extension (type :data:`NDARRAY_EXT`) whose payload is::

    u8  len(dtype)   | dtype string, ASCII (numpy's ``dtype.str``, e.g. ``"<f4"``, ``"|u1"``)
    u8  ndim         | ndim x u64 little-endian dimensions
    raw bytes in C order

Only plain numeric and boolean dtypes are accepted (no object, string or structured dtypes), and the byte
count must match the shape exactly, so a hostile message can neither run code nor make the decoder
allocate more than the message already holds. numpy scalars are sent as Python numbers; tuples as lists.

Example:
    >>> import numpy as np
    >>> msg = unpackb(packb({"pixels": np.zeros((2, 3), np.uint8), "t": np.float32(0.5)}))
    >>> msg["pixels"].shape, msg["pixels"].dtype, msg["t"]
    ((2, 3), dtype('uint8'), 0.5)
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack
import numpy as np

NDARRAY_EXT = 1
"""Msgpack extension type code of a numpy array."""

MAX_NDIM = 32
# dtype kinds that are plain bytes: bool, signed/unsigned int, float, complex.
_ALLOWED_KINDS = frozenset("biufc")


class CodecError(ValueError):
    """A message that is not valid msgpack, or holds an array this codec refuses."""


def _encode_array(arr: np.ndarray) -> msgpack.ExtType:
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
        raise TypeError(
            f"cannot send an array of dtype {arr.dtype!r}: only bool/int/uint/float/complex arrays are "
            "supported; send strings as str or a list of str"
        )
    if arr.ndim > MAX_NDIM:
        raise TypeError(f"cannot send an array with {arr.ndim} dimensions (at most {MAX_NDIM})")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d
    dtype = arr.dtype.str.encode("ascii")
    header = struct.pack(f"<B{len(dtype)}sB{arr.ndim}Q", len(dtype), dtype, arr.ndim, *arr.shape)
    return msgpack.ExtType(NDARRAY_EXT, header + arr.tobytes())


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _encode_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    # torch tensors and other array-likes: numpy view on CPU (no torch import here).
    if hasattr(obj, "__array__") and hasattr(obj, "shape"):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return _encode_array(np.asarray(obj))
    raise TypeError(f"cannot serialise an object of type {type(obj).__name__}: {obj!r:.80}")


def _decode_array(data: bytes) -> np.ndarray:
    try:
        (dtype_len,) = struct.unpack_from("<B", data, 0)
        offset = 1
        (dtype_str,) = struct.unpack_from(f"<{dtype_len}s", data, offset)
        offset += dtype_len
        (ndim,) = struct.unpack_from("<B", data, offset)
        offset += 1
        if ndim > MAX_NDIM:
            raise CodecError(f"array with {ndim} dimensions (at most {MAX_NDIM})")
        shape = struct.unpack_from(f"<{ndim}Q", data, offset)
        offset += 8 * ndim
    except struct.error as err:
        raise CodecError(f"truncated array header: {err}") from err
    try:
        dtype = np.dtype(dtype_str.decode("ascii"))
    except (TypeError, ValueError, UnicodeDecodeError) as err:
        raise CodecError(f"unknown array dtype {dtype_str!r}") from err
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None:
        raise CodecError(f"array dtype {dtype.str!r} is not allowed (bool/int/uint/float/complex only)")
    # Python ints: no overflow however large the claimed shape is.
    n_items = 1
    for dim in shape:
        n_items *= dim
    payload = len(data) - offset
    if n_items * dtype.itemsize != payload:
        raise CodecError(
            f"array of shape {tuple(shape)} and dtype {dtype.str} needs {n_items * dtype.itemsize} bytes, "
            f"message holds {payload}"
        )
    # Copy so the array is writable and does not pin the whole message in memory.
    return np.frombuffer(data, dtype=dtype, count=n_items, offset=offset).reshape(shape).copy()


def _ext_hook(code: int, data: bytes) -> Any:
    if code == NDARRAY_EXT:
        return _decode_array(data)
    raise CodecError(f"unknown msgpack extension type {code} (only {NDARRAY_EXT} = numpy array)")


_local = threading.local()


def packb(obj: Any) -> bytes:
    """Serialise ``obj`` (dicts, lists, str, numbers, None, numpy arrays and scalars) to msgpack bytes.

    Raises:
        TypeError: ``obj`` holds something that cannot be sent (an object/string array, a custom class).
    """
    # One packer per thread, reused: its buffer stays allocated. A fresh packer per message grows its
    # buffer by realloc, which for image-sized messages costs ~1 ms in the main thread (glibc returns
    # large blocks of the main arena to the OS and faults them back in) against ~0.01 ms reused.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True, autoreset=False)
    try:
        packer.pack(obj)
        return packer.bytes()
    finally:
        packer.reset()


def unpackb(data: bytes) -> Any:
    """Deserialise msgpack bytes written by :func:`packb`; arrays come back as writable numpy arrays.

    Raises:
        CodecError: ``data`` is not valid msgpack, is truncated or has trailing bytes, or holds an array
            this codec refuses.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        # ExtraData, FormatError, StackError and UnicodeDecodeError are all ValueError subclasses.
        raise CodecError(f"not a valid msgpack message: {err}") from err
