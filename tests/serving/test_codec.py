"""The msgpack + numpy codec: exact round trips, and refusal of anything unsafe or inconsistent."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

from fastvla.serving.codec import NDARRAY_EXT, CodecError, packb, unpackb


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.linspace(-1, 1, 7, dtype=np.float32),
        np.array(3.5, dtype=np.float64),  # 0-d
        np.zeros((0, 5), dtype=np.int64),  # empty
        np.array([True, False, True]),
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian from a foreign client
        np.arange(12, dtype=np.float16).reshape(3, 4)[:, ::2],  # non-contiguous view
        np.array([1 + 2j], dtype=np.complex64),
    ],
)
def test_array_round_trip_is_exact(array: np.ndarray) -> None:
    out = unpackb(packb({"x": array}))["x"]
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable  # policies may normalise in place


def test_nested_messages_scalars_and_tuples() -> None:
    msg = {"obs": {"pixels": {"front": np.ones((2, 2, 3), np.uint8)}}, "t": np.float32(0.25), "k": (1, "a")}
    out = unpackb(packb(msg))
    assert out["t"] == 0.25 and isinstance(out["t"], float)
    assert out["k"] == [1, "a"]
    np.testing.assert_array_equal(out["obs"]["pixels"]["front"], msg["obs"]["pixels"]["front"])


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([object()], dtype=object)])
def test_encoding_refuses_string_and_object_arrays(bad: np.ndarray) -> None:
    with pytest.raises(TypeError, match="dtype"):
        packb({"x": bad})


def _ext(dtype: bytes, shape: tuple[int, ...], payload: bytes) -> bytes:
    header = struct.pack(f"<B{len(dtype)}sB{len(shape)}Q", len(dtype), dtype, len(shape), *shape)
    return msgpack.packb({"x": msgpack.ExtType(NDARRAY_EXT, header + payload)})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1", "not a valid msgpack"),  # reserved byte
        (msgpack.packb({"a": 1}) + b"\x00", "not a valid msgpack"),  # trailing bytes
        (msgpack.packb({"a": 1})[:-1], "not a valid msgpack"),  # truncated
        (_ext(b"<f4", (2**40, 2**40), b"\x00" * 16), "needs"),  # shape claims far more than sent
        (_ext(b"<f4", (3,), b"\x00" * 8), "needs 12 bytes"),
        (_ext(b"|O", (1,), b"\x00" * 8), "not allowed"),  # pickled objects: never
        (_ext(b"<U4", (1,), b"\x00" * 16), "not allowed"),
        (_ext(b"zz", (1,), b"\x00"), "unknown array dtype"),
        (msgpack.packb({"x": msgpack.ExtType(NDARRAY_EXT, b"\x05<f")}), "truncated"),
        (msgpack.packb({"x": msgpack.ExtType(42, b"")}), "unknown msgpack extension"),
        (msgpack.packb({1: "int key"}), "not a valid msgpack"),
    ],
)
def test_decoding_rejects_malformed_input(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        unpackb(data)
