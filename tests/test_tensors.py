from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import SpecError
from modelport.tensors import (
    DTYPES,
    dtype_of_array,
    format_range,
    format_shape,
    lookup_dtype,
    parse_shape,
    shape_matches,
    value_outside,
)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_every_name_of_a_dtype_finds_it(dtype):
    for alias in (dtype.name, dtype.v2, dtype.onnx, dtype.tf):
        assert lookup_dtype(alias) is dtype


def test_table_covers_the_v2_protocol():
    v2 = {d.v2 for d in DTYPES.values()}
    expected = {"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
    assert v2 >= expected | {"FP16", "FP32", "FP64", "BYTES", "BF16"}


@pytest.mark.parametrize("name", [n for n in DTYPES if n != "string"])
def test_numpy_round_trip(name):
    dtype = DTYPES[name]
    array = np.zeros((2, 3), dtype=dtype.np_dtype())
    assert dtype_of_array(array) is dtype


def test_strings_are_object_arrays():
    assert dtype_of_array(np.array([b"a", b"bc"], dtype=object)).name == "string"
    assert dtype_of_array(np.array(["a"])).name == "string"


def test_unknown_dtype_names_the_choices():
    with pytest.raises(SpecError, match=r"unknown data type 'complex64'.*float32"):
        lookup_dtype("complex64")


@pytest.mark.parametrize(
    ("text", "shape"),
    [("-1x1x8x8", (-1, 1, 8, 8)), ("[-1,3]", (-1, 3)), ("?x5", (-1, 5)), ("scalar", ()), ("7", (7,))],
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape
    assert parse_shape(format_shape(shape)) == shape


@pytest.mark.parametrize("text", ["-2x3", "ax3", "1x", "3x-7"])
def test_bad_shapes_are_rejected(text):
    with pytest.raises(SpecError):
        parse_shape(text)


def test_shape_matching():
    assert shape_matches((-1, 1, 8, 8), (5, 1, 8, 8))
    assert not shape_matches((-1, 1, 8, 8), (5, 8, 8, 1))
    assert not shape_matches((-1, 10), (5, 10, 1))
    assert shape_matches((), ())


def test_an_integer_range_excludes_its_end_like_python_range():
    ids = np.array([[0, 1, 999], [5, 1000, 2000]], dtype=np.int64)
    assert value_outside(ids[:1], 0, 1000) is None
    assert value_outside(ids, 0, 1000) == ((1, 1), 1000), "the first offending element, in row-major order"
    assert value_outside(np.array([-1], dtype=np.int32), 0, 1000) == ((0,), -1)
    assert format_range(0, 1000, integer=True) == "0 <= value < 1000"


def test_a_float_range_includes_its_end_and_nan_is_outside_every_range():
    pixels = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    assert value_outside(pixels, 0, 1) is None
    assert value_outside(np.array([0.5, 1.5], dtype=np.float16), 0, 1) == ((1,), 1.5)
    found = value_outside(np.array([0.5, np.nan]), 0, 1)
    assert found is not None and found[0] == (1,) and np.isnan(found[1])
    assert format_range(0, 1, integer=False) == "0 <= value <= 1"


def test_ranges_with_fractional_infinite_or_foreign_bounds():
    assert value_outside(np.array([1, 9], dtype=np.int64), 0.5, 9.5) is None  # integers 1 to 9
    assert value_outside(np.array([0], dtype=np.int64), 0.5, 9.5) == ((0,), 0)
    assert format_range(0.5, 9.5, integer=True) == "1 <= value < 10"
    assert value_outside(np.array([2**62], dtype=np.int64), 0, float("inf")) is None
    assert value_outside(np.array([0, 255], dtype=np.uint8), -5, 300) is None
    assert value_outside(np.array(7, dtype=np.int64), 0, 5) == ((), 7), "a scalar has the empty index"
    assert value_outside(np.zeros((0, 4), dtype=np.int64), 0, 5) is None
