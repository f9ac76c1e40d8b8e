"""Small HTTP helpers shared by the protocol adapters."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import PayloadTooLargeError, SpecError
from modelport.tensors import DataType

__all__ = ["finite", "json_response", "json_tensor", "loads", "non_finite_dumps", "numbers_dumps", "read_body"]

_MAX_DEPTH = 32  # numpy allows 64 dimensions; no model input has more than a handful


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded JSON response."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def loads(raw: bytes) -> Any:
    """JSON with the tokens NaN, Infinity and -Infinity that Triton and TF Serving take (orjson, then the standard
    library for a body orjson refused); orjson's ``JSONDecodeError`` when it is not valid even so."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            return json.loads(raw, parse_float=_float)
        except (ValueError, RecursionError):
            raise error from None


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: a number too large, not the token Infinity (orjson's error says so)
        raise ValueError(text)
    return value


def non_finite_dumps(data: Any) -> bytes:
    """``data`` (numpy arrays included) as JSON that writes NaN, Infinity and -Infinity as those tokens, as
    Triton and TF Serving do (orjson writes null)."""
    return json.dumps(data, separators=(",", ":"), default=_listed).encode()


def _listed(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite(value: np.ndarray[Any, Any]) -> bool:
    """No NaN or infinity in ``value`` (always true for non-float values)."""
    return value.dtype.kind != "f" or bool(np.isfinite(value).all())


def numbers_dumps(data: Any, arrays: Iterable[np.ndarray[Any, Any]]) -> bytes:
    """``data`` (numpy arrays included) as JSON, the values of ``arrays`` in it: NaN, Infinity and -Infinity written
    as those tokens, as Triton and TF Serving do. orjson writes them as null, so only a text with a null pays for
    the finiteness check (its numpy calls cost ~10 us of a lone request's CPU, cold); the bytes are the same."""
    text = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in text and not all(finite(a) for a in arrays):
        return non_finite_dumps(data)
    return text


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLargeError(f"the request body ({declared} bytes) exceeds the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_tensor(name: str, value: Any, dtype: DataType) -> np.ndarray[Any, Any]:
    """Nested JSON lists (TF Serving, TorchServe bodies) as a tensor of ``dtype``: numbers that fit the type
    (integers in range, no fractions), or strings / ``{"b64": ...}`` for string tensors."""
    try:
        if dtype.name == "string":
            strings = np.array(_strings(value, 0), dtype=object)
            if not all(isinstance(x, bytes) for x in strings.flat):  # ragged rows become lists of lists
                raise ValueError("ragged")
            return strings
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise SpecError(_not_a_tensor(name, dtype)) from None
    if array.dtype.kind not in ("b" if dtype.name == "bool" else "iufb"):
        raise SpecError(_not_a_tensor(name, dtype))
    if array.ndim > _MAX_DEPTH:
        raise SpecError(f"input {name!r}: {array.ndim} dimensions; at most {_MAX_DEPTH}")
    if dtype.is_integer and array.size and not _fits(array, dtype):
        info = np.iinfo(dtype.np_dtype())
        raise SpecError(f"input {name!r}: {dtype.name} values must be integers in [{info.min}, {info.max}]")
    return array.astype(dtype.np_dtype())


def _not_a_tensor(name: str, dtype: DataType) -> str:
    what = {"string": 'strings or {"b64": ...}', "bool": "true/false"}.get(dtype.name, "numbers")
    return f"input {name!r}: the values do not form a {dtype.name} tensor (expected a rectangular list of {what})"


def _fits(array: np.ndarray[Any, Any], dtype: DataType) -> bool:
    info = np.iinfo(dtype.np_dtype())
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (np.mod(array, 1) == 0).all()):
        return False
    return bool(array.min() >= info.min and array.max() <= info.max)


def _strings(value: Any, depth: int) -> Any:
    """Strings as bytes, at any nesting up to ``_MAX_DEPTH`` (deeper input is refused, not recursed into)."""
    if isinstance(value, list):
        if depth >= _MAX_DEPTH:
            raise ValueError("nested too deeply")
        return [_strings(v, depth + 1) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, str):
        return value.encode()
    raise ValueError("not a string")
