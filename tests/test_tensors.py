from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import SpecError
from modelport.tensors import DTYPES, dtype_of_array, format_shape, lookup_dtype, parse_shape, shape_matches


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
