"""Data types, shapes and spec parsing shared by every part of modelport.

One table maps each tensor data type to its names in numpy, the KServe v2
protocol, ONNX, TensorFlow and PyTorch. Shapes are tuples of ints where ``-1``
marks a dynamic dimension.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import SpecError, UnsupportedError

__all__ = [
    "DTYPES",
    "TF_DTYPES",
    "Arrays",
    "DataType",
    "Shape",
    "dtype_of_array",
    "format_range",
    "format_shape",
    "lookup_dtype",
    "parse_shape",
    "raw_bytes",
    "shape_matches",
    "value_outside",
]

Arrays = dict[str, np.ndarray[Any, Any]]
"""Named tensors: what runtimes take and return, and what every protocol decodes to."""

Shape = tuple[int, ...]


_NP_DTYPES: dict[str, np.dtype[Any]] = {}
_FLOATS = frozenset(("float16", "bfloat16", "float32", "float64"))


@dataclass(frozen=True)
class DataType:
    """One tensor data type and its name in every system modelport talks to."""

    name: str
    v2: str
    numpy: str
    onnx: str
    tf: str
    torch: str | None

    def np_dtype(self) -> np.dtype[Any]:
        """The numpy dtype; bfloat16 comes from ``ml_dtypes``, strings are objects (made once: hot path)."""
        found = _NP_DTYPES.get(self.name)
        if found is None:
            found = _NP_DTYPES[self.name] = self._make_np_dtype()
        return found

    def _make_np_dtype(self) -> np.dtype[Any]:
        if self.name == "bfloat16":
            import ml_dtypes

            bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
            return bfloat16
        return np.dtype(self.numpy)

    @property
    def is_float(self) -> bool:
        return self.name in _FLOATS

    @property
    def is_integer(self) -> bool:
        return self.name.startswith(("int", "uint"))


_TABLE = [
    DataType("bool", "BOOL", "bool", "tensor(bool)", "bool", "bool"),
    DataType("int8", "INT8", "int8", "tensor(int8)", "int8", "int8"),
    DataType("int16", "INT16", "int16", "tensor(int16)", "int16", "int16"),
    DataType("int32", "INT32", "int32", "tensor(int32)", "int32", "int32"),
    DataType("int64", "INT64", "int64", "tensor(int64)", "int64", "int64"),
    DataType("uint8", "UINT8", "uint8", "tensor(uint8)", "uint8", "uint8"),
    DataType("uint16", "UINT16", "uint16", "tensor(uint16)", "uint16", "uint16"),
    DataType("uint32", "UINT32", "uint32", "tensor(uint32)", "uint32", "uint32"),
    DataType("uint64", "UINT64", "uint64", "tensor(uint64)", "uint64", "uint64"),
    DataType("float16", "FP16", "float16", "tensor(float16)", "float16", "float16"),
    DataType("bfloat16", "BF16", "bfloat16", "tensor(bfloat16)", "bfloat16", "bfloat16"),
    DataType("float32", "FP32", "float32", "tensor(float)", "float32", "float32"),
    DataType("float64", "FP64", "float64", "tensor(double)", "float64", "float64"),
    DataType("string", "BYTES", "object", "tensor(string)", "string", None),
]

DTYPES: dict[str, DataType] = {d.name: d for d in _TABLE}

_ALIASES: dict[str, str] = {}
for _d in _TABLE:
    for _alias in (_d.name, _d.v2, _d.onnx, _d.tf, _d.numpy):
        _ALIASES.setdefault(_alias.lower(), _d.name)
_ALIASES.update(
    {
        "float": "float32",
        "double": "float64",
        "half": "float16",
        "bytes": "string",
        "str": "string",
        "fp32": "float32",
        "fp16": "float16",
        "fp64": "float64",
        "long": "int64",
        "int": "int32",
    }
)


def lookup_dtype(name: str) -> DataType:
    """Find a data type by any of its names (``float32``, ``FP32``, ``tensor(float)``...)."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        known = ", ".join(DTYPES)
        raise SpecError(f"unknown data type {name!r}; expected one of: {known}")
    return DTYPES[key]


_BY_NUMPY: dict[np.dtype[Any], DataType] = {
    np.dtype(d.numpy): d for d in _TABLE if d.numpy not in ("object", "bfloat16")
}


def dtype_of_array(array: np.ndarray[Any, Any]) -> DataType:
    """The data type of a numpy array (object and bytes arrays are strings); O(1), it is on the hot path."""
    found = _BY_NUMPY.get(array.dtype)
    if found is not None:
        return found
    kind = array.dtype
    if kind.kind in ("O", "S", "U"):
        return DTYPES["string"]
    if kind.name == "bfloat16":
        return DTYPES["bfloat16"]
    found = _BY_NUMPY.get(kind.newbyteorder("="))
    if found is not None:
        return found
    raise UnsupportedError(f"numpy dtype {kind} has no tensor data type")


def parse_shape(text: str) -> Shape:
    """Parse ``-1x1x8x8`` (or ``[-1,1,8,8]``, ``?`` for dynamic) into a shape tuple."""
    body = text.strip().strip("[]()")
    if body in ("", "scalar"):
        return ()
    parts = body.replace(",", "x").split("x")
    dims: list[int] = []
    for part in parts:
        part = part.strip()
        if part in ("?", "-1", "None", "none"):
            dims.append(-1)
            continue
        try:
            dim = int(part)
        except ValueError:
            raise SpecError(f"shape {text!r}: {part!r} is not a dimension (use an int or -1)") from None
        if dim < 0:
            raise SpecError(f"shape {text!r}: negative dimension {dim} (use -1 for dynamic)")
        dims.append(dim)
    return tuple(dims)


def format_shape(shape: Shape) -> str:
    """Render a shape the way flags take it: ``-1x1x8x8`` (``scalar`` for ``()``)."""
    return "x".join(str(d) for d in shape) if shape else "scalar"


def shape_matches(spec: Shape, actual: Shape) -> bool:
    """True when ``actual`` fits ``spec``: same rank, equal dims except where spec has -1."""
    if len(spec) != len(actual):
        return False
    for want, got in zip(spec, actual, strict=True):  # noqa: SIM110 (a plain loop: it runs for every request)
        if want != -1 and want != got:
            return False
    return True


def _bounds(low: float, high: float, integer: bool) -> tuple[float, float]:
    """Integer bounds as exact ints (``0.5..10`` holds 1 to 9); infinite bounds stay floats."""
    return (_ceil(low), _ceil(high)) if integer else (low, high)


def _ceil(bound: float) -> float:
    return math.ceil(bound) if math.isfinite(bound) else bound


def _number(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def value_outside(values: np.ndarray[Any, Any], low: float, high: float) -> tuple[tuple[int, ...], Any] | None:
    """The index and value of the first element outside the range ``low..high``, or None.

    Integers must satisfy ``low <= v < high`` (``0..1000`` holds the ids of a 1000-row table,
    like Python's ``range``); floats ``low <= v <= high`` (``0..1`` holds a pixel of exactly 1.0).
    NaN is outside every range.
    """
    integer = values.dtype.kind in "iu"
    start, stop = _bounds(low, high, integer)
    inside = (values >= start) & ((values < stop) if integer else (values <= stop))
    if inside.all():
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmin(inside)), values.shape))
    return index, values[index].item()


def format_range(low: float, high: float, integer: bool) -> str:
    """The range ``low..high`` as the inequality :func:`value_outside` checks: ``0 <= value < 1000``."""
    start, stop = _bounds(low, high, integer)
    return f"{_number(start)} <= value {'<' if integer else '<='} {_number(stop)}"


# modelport dtype name -> TF Serving's DataType enum name (REST metadata, gRPC TensorProto)
TF_DTYPES = {
    "bool": "DT_BOOL",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "float16": "DT_HALF",
    "bfloat16": "DT_BFLOAT16",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "string": "DT_STRING",
}


def raw_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """A tensor as raw little-endian bytes (KServe binary extension, gRPC raw contents); BYTES
    elements (object, bytes or str arrays) each behind a 4-byte little-endian length."""
    if array.dtype.kind in ("O", "S", "U"):
        items = [x if isinstance(x, bytes) else str(x).encode() for x in array.ravel()]
        return b"".join(struct.pack("<I", len(x)) + x for x in items)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
