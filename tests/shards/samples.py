"""Samples with every MDS encoding, and how to compare them after a round trip (tests/shards share them)."""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

ALL_COLUMNS = {
    "b": "bytes", "s": "str", "i": "int",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "f16": "float16", "f32": "float32", "f64": "float64",
    "j": "json", "arr": "ndarray", "arr_i32": "ndarray:int32", "arr_fixed": "ndarray:uint16:4,2",
    "si": "str_int", "sf": "str_float", "sd": "str_decimal",
}


def make_sample(i: int) -> dict:
    rng = np.random.default_rng(i)
    dyn_dtype = ["uint8", "int16", "float32", "int64", "float16", "uint64"][i % 6]
    dyn_shape = [(3,), (2, 300), (1, 2, 3)][i % 3]  # 300 needs a uint16 shape value
    return {
        "b": bytes(rng.integers(0, 256, i % 7, dtype=np.uint8)),
        "s": "" if i % 5 == 0 else f"sample {i} — ünïcode ✓",
        "i": -(1 << 63) if i == 3 else i * 1_000_003 - 7,
        "u8": 255 if i == 1 else i % 256, "u16": 65535 - i, "u32": (1 << 32) - 1 - i, "u64": (1 << 64) - 1 - i,
        "i8": -128 + i % 256, "i16": -i, "i32": i * 1000, "i64": -(i * 10**12),
        "f16": 0.5 * i, "f32": 1.25 * i, "f64": np.pi * i,
        "j": {"id": i, "tags": ["a", "é"], "nested": {"x": [1, 2.5, None, True]}},
        "arr": rng.random(dyn_shape).astype(dyn_dtype) if "float" in dyn_dtype
        else rng.integers(0, 100, dyn_shape).astype(dyn_dtype),
        "arr_i32": rng.integers(-2**31, 2**31 - 1, 5 + i, dtype=np.int32),
        "arr_fixed": np.arange(8, dtype=np.uint16).reshape(4, 2) + i,
        "si": 2**100 + i, "sf": 0.1 * i, "sd": Decimal("3.14159265358979323846") + i,
    }


def assert_same_value(got, expected, key):
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), key
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    elif isinstance(expected, float):
        assert float(got) == pytest.approx(expected, rel=1e-3), key
    else:
        assert got == expected, key


def assert_same_samples(got: list[dict], expected: list[dict]):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert sorted(g) == sorted(e)
        for key in e:
            assert_same_value(g[key], e[key], key)
