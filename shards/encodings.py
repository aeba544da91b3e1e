"""MDS column encodings: how one column value becomes bytes inside a sample, and back.

The names and byte layouts are those of mosaicml-streaming 0.13, so either side can read the
other's shards. Decoders take a buffer and a byte range instead of a slice, so ``ndarray``
columns decode as zero-copy, read-only ``np.frombuffer`` views of the shard.
"""
from __future__ import annotations

import functools
import json
import pickle
import struct
from decimal import Decimal
from typing import Any

import numpy as np


class EncodingError(ValueError):
    """A column encoding name that we cannot use, or a value that does not fit its encoding."""


# ndarray dtype codes, shared with mosaicml-streaming (one byte in a dynamic-dtype header).
NDARRAY_DTYPE_CODES = {
    "uint8": 8, "int8": 9,
    "uint16": 16, "int16": 17, "float16": 18,
    "uint32": 32, "int32": 33, "float32": 34,
    "uint64": 64, "int64": 65, "float64": 66,
}
_NDARRAY_CODE_DTYPES = {code: name for name, code in NDARRAY_DTYPE_CODES.items()}
_NDARRAY_CODES_BY_DTYPE = {np.dtype(name).newbyteorder("<"): code for name, code in NDARRAY_DTYPE_CODES.items()}

# Shape values in a dynamic-shape header are stored as the smallest of these that fits.
_SHAPE_FORMATS = ("B", "H", "I", "Q")  # uint8, uint16, uint32, uint64
_SHAPE_LIMITS = (1 << 8, 1 << 16, 1 << 32, 1 << 64)

SCALAR_ENCODINGS = tuple(NDARRAY_DTYPE_CODES)  # the numpy scalar column types share the names

# Encodings streaming knows but we refuse, with the reason.
_REFUSED = {
    "pil": "image encodings need Pillow and are not part of the kiln data contract",
    "jpeg": "image encodings need Pillow and are not part of the kiln data contract",
    "png": "image encodings need Pillow and are not part of the kiln data contract",
}


class Encoding:
    """One column type. ``size`` is the fixed byte size, or None for variable-size columns."""

    name: str
    size: int | None = None

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, buf: memoryview, start: int, end: int) -> Any:
        raise NotImplementedError


class BytesEncoding(Encoding):
    name = "bytes"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise EncodingError(f"expected bytes, got {type(value).__name__}")
        return bytes(value)

    def decode(self, buf: memoryview, start: int, end: int) -> bytes:
        return bytes(buf[start:end])


class StrEncoding(Encoding):
    name = "str"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise EncodingError(f"expected str, got {type(value).__name__}")
        return value.encode("utf-8")

    def decode(self, buf: memoryview, start: int, end: int) -> str:
        return str(buf[start:end], "utf-8")


class IntEncoding(Encoding):
    """A Python int stored as int64."""

    name = "int"
    size = 8

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise EncodingError(f"expected int, got {type(value).__name__}")
        if not -(1 << 63) <= int(value) < (1 << 63):
            raise EncodingError(f"{value} does not fit in int64")
        return struct.pack("<q", int(value))

    def decode(self, buf: memoryview, start: int, end: int) -> int:
        return struct.unpack_from("<q", buf, start)[0]


class ScalarEncoding(Encoding):
    """One numpy scalar; decodes to a numpy scalar, as streaming does."""

    def __init__(self, dtype_name: str):
        self.name = dtype_name
        self.dtype = np.dtype(dtype_name).newbyteorder("<")
        self.size = self.dtype.itemsize

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise EncodingError(f"expected a number for {self.name}, got {type(value).__name__}")
        if self.dtype.kind in "iu":
            if not isinstance(value, (int, np.integer)):
                raise EncodingError(f"expected an integer for {self.name}, got {value!r}")
            limits = np.iinfo(self.dtype)
            if not limits.min <= int(value) <= limits.max:
                raise EncodingError(f"{value} does not fit in {self.name} [{limits.min}, {limits.max}]")
        return np.asarray(value, dtype=self.dtype).tobytes()

    def decode(self, buf: memoryview, start: int, end: int) -> Any:
        return np.frombuffer(buf, self.dtype, 1, start)[0]


class StrIntEncoding(Encoding):
    """An int of any size as decimal digits (streaming's ``str_int``)."""

    name = "str_int"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodingError(f"expected int, got {type(value).__name__}")
        return str(value).encode("utf-8")

    def decode(self, buf: memoryview, start: int, end: int) -> int:
        return int(str(buf[start:end], "utf-8"))


class StrFloatEncoding(Encoding):
    name = "str_float"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, float):
            raise EncodingError(f"expected float, got {type(value).__name__}")
        return str(value).encode("utf-8")

    def decode(self, buf: memoryview, start: int, end: int) -> float:
        return float(str(buf[start:end], "utf-8"))


class StrDecimalEncoding(Encoding):
    name = "str_decimal"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, Decimal):
            raise EncodingError(f"expected decimal.Decimal, got {type(value).__name__}")
        return str(value).encode("utf-8")

    def decode(self, buf: memoryview, start: int, end: int) -> Decimal:
        return Decimal(str(buf[start:end], "utf-8"))


class JsonEncoding(Encoding):
    name = "json"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        try:
            return json.dumps(value).encode("utf-8")
        except TypeError as err:
            raise EncodingError(f"value is not JSON-serialisable: {err}") from None

    def decode(self, buf: memoryview, start: int, end: int) -> Any:
        return json.loads(str(buf[start:end], "utf-8"))


class PickleEncoding(Encoding):
    """Read-only: unpickling runs arbitrary code, so readers must opt in and we never write it."""

    name = "pkl"

    def encode(self, value: Any) -> bytes:
        raise EncodingError("the pkl encoding is never written; use json, str or bytes")

    def decode(self, buf: memoryview, start: int, end: int) -> Any:
        return pickle.loads(buf[start:end])


class NDArrayEncoding(Encoding):
    """``ndarray``, ``ndarray:DTYPE`` or ``ndarray:DTYPE:D0,D1,...``.

    Layout: [dtype code: 1 byte, only when the dtype is not in the name]
    [(ndim << 2) | shape width code: 1 byte, then ndim shape values, only when the shape is
    not in the name] [the values in C order, little-endian].
    """

    def __init__(self, name: str, dtype_name: str | None, shape: tuple[int, ...] | None):
        self.name = name
        self.dtype = np.dtype(dtype_name).newbyteorder("<") if dtype_name else None
        self.shape = shape
        self.size = None
        if self.dtype is not None and shape is not None:
            self.size = int(np.prod(shape)) * self.dtype.itemsize

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, np.ndarray):
            raise EncodingError(f"expected a numpy array, got {type(value).__name__}")
        if value.dtype.byteorder == ">":
            value = value.astype(value.dtype.newbyteorder("<"))
        code = _NDARRAY_CODES_BY_DTYPE.get(value.dtype)  # a dict lookup: dtype.name is slow
        if code is None:
            raise EncodingError(
                f"array dtype {value.dtype.name} is not storable; use one of {', '.join(NDARRAY_DTYPE_CODES)}"
            )
        if self.dtype is not None and value.dtype != self.dtype:
            raise EncodingError(
                f"array dtype is {value.dtype.name} but the column is {self.name}; "
                f"convert it with .astype('{self.dtype.name}') after checking the value range"
            )
        if value.ndim == 0 or value.size == 0:
            raise EncodingError(f"cannot store an array of shape {value.shape}: it needs at least one element")
        parts = []
        if self.dtype is None:
            parts.append(bytes([code]))
        if self.shape is None:
            if value.ndim >= 64:
                raise EncodingError(f"array has {value.ndim} dimensions; at most 63 are storable")
            width = next(w for w, limit in enumerate(_SHAPE_LIMITS) if max(value.shape) < limit)
            parts.append(bytes([(value.ndim << 2) | width]))
            parts.append(struct.pack(f"<{value.ndim}{_SHAPE_FORMATS[width]}", *value.shape))
        elif value.shape != self.shape:
            raise EncodingError(f"array shape is {value.shape} but the column is {self.name}")
        parts.append(value.tobytes())
        return b"".join(parts)

    def decode(self, buf: memoryview, start: int, end: int) -> np.ndarray:
        pos = start
        dtype = self.dtype
        if dtype is None:
            code = buf[pos]
            pos += 1
            if code not in _NDARRAY_CODE_DTYPES:
                raise ValueError(f"unknown ndarray dtype code {code}")
            dtype = np.dtype(_NDARRAY_CODE_DTYPES[code]).newbyteorder("<")
        shape = self.shape
        if shape is None:
            header = buf[pos]
            pos += 1
            ndim, width = header >> 2, header & 3
            shape = struct.unpack_from(f"<{ndim}{_SHAPE_FORMATS[width]}", buf, pos)
            pos += ndim * (1 << width)
        count = 1
        for dim in shape:
            count *= dim
        if pos + count * dtype.itemsize != end:
            raise ValueError(
                f"ndarray of shape {tuple(shape)} {dtype.name} needs {count * dtype.itemsize} bytes, "
                f"the sample holds {end - pos}"
            )
        return np.frombuffer(buf, dtype, count, pos).reshape(shape)


_SIMPLE = {
    "bytes": BytesEncoding,
    "str": StrEncoding,
    "int": IntEncoding,
    "str_int": StrIntEncoding,
    "str_float": StrFloatEncoding,
    "str_decimal": StrDecimalEncoding,
    "json": JsonEncoding,
    "pkl": PickleEncoding,
}


@functools.lru_cache(maxsize=None)
def get_encoding(name: str) -> Encoding:
    """The coder for an encoding name such as ``str``, ``uint16`` or ``ndarray:uint16:2048``."""
    if not isinstance(name, str):
        raise EncodingError(f"an encoding name must be a string, got {name!r}")
    if name in _SIMPLE:
        return _SIMPLE[name]()
    if name in SCALAR_ENCODINGS:
        return ScalarEncoding(name)
    base = name.split(":", 1)[0]
    if base in _REFUSED:
        raise EncodingError(f"encoding {name!r} is not supported: {_REFUSED[base]}")
    if base == "ndarray":
        return _parse_ndarray(name)
    known = sorted([*_SIMPLE, *SCALAR_ENCODINGS, "ndarray", "ndarray:DTYPE", "ndarray:DTYPE:SHAPE"])
    raise EncodingError(f"unknown encoding {name!r}; known: {', '.join(known)}")


def _parse_ndarray(name: str) -> NDArrayEncoding:
    args = name.split(":")[1:]
    if len(args) > 2:
        raise EncodingError(f"encoding {name!r}: expected ndarray, ndarray:DTYPE or ndarray:DTYPE:SHAPE")
    dtype_name = args[0] if args else None
    if dtype_name is not None and dtype_name not in NDARRAY_DTYPE_CODES:
        raise EncodingError(
            f"encoding {name!r}: dtype {dtype_name!r} is not one of {', '.join(NDARRAY_DTYPE_CODES)}"
        )
    shape = None
    if len(args) == 2:
        try:
            shape = tuple(int(dim) for dim in args[1].split(","))
        except ValueError:
            raise EncodingError(f"encoding {name!r}: the shape must be comma-separated integers") from None
        if any(dim < 1 for dim in shape):
            raise EncodingError(f"encoding {name!r}: every dimension must be at least 1")
    return NDArrayEncoding(name, dtype_name, shape)
