"""KServe v2 / Open Inference Protocol codecs: JSON and the binary tensor extension.

Requests are decoded with orjson straight into numpy (no per-tensor pydantic models);
binary tensors are read with ``np.frombuffer``. Element counts are checked against the
declared shape before anything is allocated, so a small body cannot claim a huge tensor.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Literal, cast

import numpy as np
import orjson

from modelport.errors import InvalidArgumentError, SpecError
from modelport.runtimes.base import Arrays
from modelport.serving.httputil import loads, numbers_dumps
from modelport.serving.shm import Locator, SharedTensor
from modelport.serving.types import InferRequest, InferResponse, RequestedOutput
from modelport.tensors import DTYPES, DataType, dtype_of_array, raw_bytes

__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "decode_raw_tensor",
    "decode_request",
    "decode_shared_tensor",
    "decode_typed_tensor",
    "encode_raw_tensor",
    "encode_response",
]

HEADER_LENGTH = "inference-header-content-length"
_BY_V2 = {d.v2: d for d in DTYPES.values()}
_MAX_DIMS = 16
_MAX_DIM = 2**40
_NONE_WANTED: dict[str, RequestedOutput] = {}  # read only: a request that names no outputs
_NO_PARAMETERS: dict[str, Any] = {}  # read only: an input without parameters
_NO_BINARY = memoryview(b"")  # a JSON-only request's binary data
_SHM_KEYS = frozenset({"shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"})


def decode_request(body: bytes, header_length: int | None, regions: Locator | None = None) -> InferRequest:
    """Decode a v2 infer body (JSON, optionally followed by binary tensor data); tensors in shared memory are read
    from (inputs) or located in (outputs) ``regions``."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InvalidArgumentError(
            f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)"
        )
    header_bytes = body if header_length is None else body[:header_length]
    header = _parse_json(header_bytes)
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise InvalidArgumentError("the request must be a JSON object with a non-empty 'inputs' list")
    binary = memoryview(body)[header_length:] if header_length is not None else _NO_BINARY
    inputs: Arrays = {}
    offset = 0
    for item in header["inputs"]:
        name, array, used = _decode_input(item, binary, offset, regions)
        if name in inputs:
            raise InvalidArgumentError(f"input {name!r} is given twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidArgumentError(f"the binary data is {len(binary)} bytes but the inputs declare {offset}")
    parameters = header.get("parameters", _NO_PARAMETERS)
    if type(parameters) is not dict:
        parameters = _object(parameters, "parameters")
    request_id = header.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidArgumentError("id must be a string")
    return InferRequest(
        inputs,
        request_id,
        () if "outputs" not in header else _requested_outputs(header["outputs"], regions),
        parameters if parameters else {},  # a request's own dict: the shared empty one stays empty
        bool(parameters.get("binary_data_output", False)) if parameters else False,
    )


def _requested_outputs(value: Any, regions: Locator | None) -> tuple[RequestedOutput, ...]:
    return tuple(_requested(o, regions) for o in _list(value, "outputs"))


_LARGE_JSON = 64 * 1024
_BUFFER_TYPES = {"i": np.int64, "u": np.uint64, "d": np.float64}


def _parse_json(data: bytes) -> Any:
    """orjson; bodies over 64 KiB go through simdjson, whose numeric arrays land in numpy without
    becoming Python floats (a 3x224x224 FP32 tensor: ~2.5 ms instead of ~8 ms)."""
    if len(data) > _LARGE_JSON:
        parsed = _parse_large(data)
        if parsed is not None:
            return parsed
    try:
        return loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the request body is not valid JSON: {exc}") from None


def _parse_large(data: bytes) -> dict[str, Any] | None:
    try:
        import simdjson
    except ImportError:
        return None
    try:
        document = simdjson.Parser().parse(data)
    except (ValueError, RuntimeError):  # invalid, too deep...: orjson's path gives the error message
        return None
    inputs = document.get("inputs") if isinstance(document, simdjson.Object) else None
    if not isinstance(document, simdjson.Object) or not isinstance(inputs, simdjson.Array):
        return None
    header: dict[str, Any] = {k: _plain(document[k]) for k in document if k != "inputs"}
    header["inputs"] = [_large_input(item) for item in inputs]
    return header


def _large_input(item: Any) -> Any:
    import simdjson

    if not isinstance(item, simdjson.Object):
        return _plain(item)
    entry = {k: _plain(item[k]) for k in item if k != "data"}
    if "data" in item:
        entry["data"] = _large_data(item["data"], entry.get("datatype"))
    return entry


def _large_data(data: Any, datatype: Any) -> Any:
    """A numeric array as a flat numpy buffer (C speed); anything else as plain Python."""
    import simdjson

    dtype = _BY_V2.get(datatype) if isinstance(datatype, str) else None
    if not isinstance(data, simdjson.Array) or dtype is None or not (dtype.is_float or dtype.is_integer):
        return _plain(data)
    kind: Literal["d", "i", "u"] = "d"
    if dtype.is_integer:
        kind = "u" if dtype.name == "uint64" else "i"
    # Any, not simdjson's stub: its ``as_buffer`` says ``bytes`` and returns an ArrayBuffer. Compiled (mypyc), the
    # stub's type was checked at run time: a TypeError sent every large body down the as_list path, and the
    # failed check kept a reference to the buffer (~8 bytes a value leaked per request: benchmarks/serving.py's
    # ResNet-18 JSON cells grew the server past 1.8 GB).
    array = cast(Any, data)
    try:
        return np.frombuffer(array.as_buffer(of_type=kind), dtype=_BUFFER_TYPES[kind])
    except (TypeError, ValueError):  # mixed or mistyped values: the checked path explains
        return array.as_list()


def _plain(value: Any) -> Any:
    """A simdjson value as plain Python."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "as_list"):
        return value.as_list()
    return value


def _decode_input(
    item: Any, binary: memoryview, offset: int, regions: Locator | None
) -> tuple[str, np.ndarray[Any, Any], int]:
    if not isinstance(item, dict):
        raise InvalidArgumentError("each input must be an object with name, shape, datatype and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("an input has no 'name'")
    dtype = _datatype(name, item.get("datatype"))
    shape = _shape(name, item.get("shape"))
    count = math.prod(shape)  # Python ints: a claimed shape cannot overflow into a small count
    params = item.get("parameters", _NO_PARAMETERS)
    if not isinstance(params, dict):  # as _object says it, without formatting the message for every input
        raise InvalidArgumentError(f"input {name!r} parameters must be a JSON object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidArgumentError(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
        if "shared_memory_region" in params:
            raise _data_and_region(name)
        return name, _from_binary(name, dtype, shape, count, binary[offset : offset + size]), size
    if "data" not in item:  # in shared memory, or missing
        shared = regions.locate(name, params) if regions is not None else None
        if shared is None:
            raise InvalidArgumentError(f"input {name!r} has neither 'data' nor binary_data_size")
        return name, _from_shared(name, dtype, shape, count, shared.read()), 0
    if params is not _NO_PARAMETERS and "shared_memory_region" in params:
        raise _data_and_region(name)
    return name, _from_json(name, dtype, shape, count, item["data"]), 0


def _data_and_region(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"input {name!r}: data is given in the request and in shared memory; send one")


def _from_shared(name: str, dtype: DataType, shape: tuple[int, ...], count: int, raw: bytes) -> np.ndarray[Any, Any]:
    """A tensor read from shared memory: raw little-endian bytes, BYTES as 4-byte lengths and elements."""
    if dtype.name != "string" and len(raw) != count * dtype.np_dtype().itemsize:
        expected = count * dtype.np_dtype().itemsize
        raise SpecError(f"unexpected total byte size {len(raw)} for input '{name}', expecting {expected}")
    return _from_binary(name, dtype, shape, count, memoryview(raw))


def _datatype(name: str, value: Any) -> DataType:
    dtype = _BY_V2.get(value) if isinstance(value, str) else None
    if dtype is None:
        raise InvalidArgumentError(f"input {name!r}: unknown datatype {value!r}; expected one of {sorted(_BY_V2)}")
    return dtype


def _shape(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_DIMS:
        raise InvalidArgumentError(f"input {name!r}: 'shape' must be a list of at most {_MAX_DIMS} non-negative ints")
    for d in value:  # a plain loop: it runs for every input of every request
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < _MAX_DIM:
            raise InvalidArgumentError(f"input {name!r}: shape {value} must hold non-negative integers below 2**40")
    return tuple(value)


def _flatten(data: Any) -> list[Any]:
    """Row-major flattening of nested lists, iteratively (deep nesting cannot overflow the stack)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            flat.append(x)
        else:
            stack.pop()
    return flat


def _from_json(name: str, dtype: DataType, shape: tuple[int, ...], count: int, data: Any) -> np.ndarray[Any, Any]:
    if isinstance(data, np.ndarray):  # already numeric (simdjson): only count and range to check
        return _from_numeric_array(name, dtype, shape, count, data)
    fast = _numeric_fast_path(name, dtype, shape, count, data)
    if fast is not None:
        return fast
    flat = _flatten(data)
    if len(flat) != count:
        raise SpecError(f"input {name!r}: shape {list(shape)} needs {count} elements, the data has {len(flat)}")
    if not flat:  # an empty tensor: np.array([]) would be float64, which BOOL and BYTES refuse
        return np.empty(shape, dtype=dtype.np_dtype())
    if dtype.name == "string":
        return np.array([_to_bytes(name, x) for x in flat], dtype=object).reshape(shape)
    raw = np.array(flat)
    if raw.dtype.kind not in ("b" if dtype.name == "bool" else "iuf"):
        raise SpecError(
            f"input {name!r}: {dtype.v2} data must be {'true/false' if dtype.name == 'bool' else 'numbers'}"
        )
    if not dtype.is_integer:
        return raw.astype(dtype.np_dtype()).reshape(shape)
    if raw.dtype.kind == "f" and not np.all(np.mod(raw, 1) == 0):
        raise SpecError(f"input {name!r}: {dtype.v2} data must be integers within the type's range")
    try:  # from the Python ints themselves: float64 would round values beyond 2**53
        array = (
            np.array(flat, dtype=dtype.np_dtype())
            if raw.dtype.kind == "f" or raw.dtype.str != dtype.np_dtype().str
            else raw
        )
    except (OverflowError, ValueError):
        raise SpecError(f"input {name!r}: {dtype.v2} data must be integers within the type's range") from None
    return array.reshape(shape)


def _from_numeric_array(
    name: str, dtype: DataType, shape: tuple[int, ...], count: int, data: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    if data.size != count:
        raise SpecError(f"input {name!r}: shape {list(shape)} needs {count} elements, the data has {data.size}")
    if dtype.is_integer:
        info = np.iinfo(dtype.np_dtype())
        if data.size and (data.min() < info.min or data.max() > info.max):
            raise SpecError(f"input {name!r}: {dtype.v2} data must be integers within the type's range")
    return data.astype(dtype.np_dtype(), copy=False).reshape(shape)


def _numeric_fast_path(
    name: str, dtype: DataType, shape: tuple[int, ...], count: int, data: Any
) -> np.ndarray[Any, Any] | None:
    """Well-formed float data in one C-speed conversion; anything unusual takes the checked path."""
    if not dtype.is_float or type(data) is not list:
        return None
    if len(data) == count and _all_floats(data):  # flat JSON floats (what tritonclient sends): one conversion
        flat = np.array(data, dtype=dtype.np_dtype())
        return flat if len(shape) == 1 else flat.reshape(shape)
    try:
        raw = np.asarray(data)
    except (ValueError, RecursionError, TypeError):  # ragged or absurdly deep: let the slow path explain
        return None
    if raw.dtype.kind not in ("f", "i") or raw.size != count:
        return None
    wanted = dtype.np_dtype()
    if raw.shape != shape:
        raw = raw.reshape(shape)
    return raw if raw.dtype == wanted else raw.astype(wanted)


def _all_floats(data: list[Any]) -> bool:
    """Every element a JSON float (not an int, a bool, a string, null or a list): ``np.array(data, dtype=...)``
    would convert strings and nulls silently, and ints beyond 64 bits differently from the checked path."""
    return all(type(x) is float for x in data)


def _to_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):  # gRPC bytes_contents
        return value
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise SpecError(f"input {name!r}: invalid base64") from None
    raise SpecError(f"input {name!r}: BYTES data must be strings")


def _from_binary(
    name: str, dtype: DataType, shape: tuple[int, ...], count: int, raw: memoryview
) -> np.ndarray[Any, Any]:
    if dtype.name == "string":
        return np.array(_split_bytes(name, raw, count), dtype=object).reshape(shape)
    expected = count * dtype.np_dtype().itemsize
    if len(raw) != expected:
        raise SpecError(f"input {name!r}: shape {list(shape)} of {dtype.v2} needs {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype.np_dtype().newbyteorder("<")).reshape(shape)


def _split_bytes(name: str, raw: memoryview, count: int) -> list[bytes]:
    """BYTES elements in binary form: each is a 4-byte little-endian length, then the bytes."""
    items, position = [], 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise SpecError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise SpecError(f"input {name!r}: a BYTES element runs past the data")
        items.append(bytes(raw[position : position + length]))
        position += length
    if len(items) != count:
        raise SpecError(f"input {name!r}: the shape needs {count} BYTES elements, the data has {len(items)}")
    return items


def decode_raw_tensor(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> np.ndarray[Any, Any]:
    """A tensor sent as raw little-endian bytes (the binary extension, gRPC ``raw_input_contents``)."""
    dtype = _datatype(name, datatype)
    dims = _shape(name, shape)
    return _from_binary(name, dtype, dims, math.prod(dims), memoryview(raw))


def decode_shared_tensor(name: str, datatype: Any, shape: Any, raw: bytes) -> np.ndarray[Any, Any]:
    """A tensor read from a shared memory region (its size must be the shape's, in Triton's words)."""
    dtype = _datatype(name, datatype)
    dims = _shape(name, shape)
    return _from_shared(name, dtype, dims, math.prod(dims), raw)


def decode_typed_tensor(name: str, datatype: Any, shape: Any, values: Any) -> np.ndarray[Any, Any]:
    """A tensor sent as a flat list of values (JSON ``data``, gRPC typed ``contents``)."""
    dtype = _datatype(name, datatype)
    dims = _shape(name, shape)
    return _from_json(name, dtype, dims, math.prod(dims), values)


def encode_raw_tensor(value: np.ndarray[Any, Any]) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw little-endian bytes) of an output tensor."""
    dtype = dtype_of_array(value)
    return dtype.v2, list(value.shape), raw_bytes(value)


def _requested(value: Any, regions: Locator | None) -> RequestedOutput:
    item = _object(value, "outputs entry")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidArgumentError("each requested output needs a 'name'")
    params = _object(item.get("parameters", {}), f"output {name!r} parameters")
    binary = params.get("binary_data")
    classification = _classification(name, params)
    shared = None
    if params and not _SHM_KEYS.isdisjoint(params) and regions is not None:
        shared = regions.locate(name, params)
        if classification:
            raise InvalidArgumentError("output can't set both 'shared_memory_region' and 'classification'")
    return RequestedOutput(name, bool(binary) if binary is not None else None, classification, shared)


def _classification(name: str, params: dict[str, Any]) -> int:
    """Triton's classification extension: ``"parameters": {"classification": N}`` on a requested output."""
    count = params.get("classification", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidArgumentError(f"output {name!r}: classification must be a non-negative integer, got {count!r}")
    return count


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{what} must be a JSON list")
    return value


def _optional_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string")
    return value


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode outputs as JSON, or JSON + binary data; returns the body and the header length (if binary)."""
    wanted = {o.name: o for o in request.outputs} if request.outputs else _NONE_WANTED
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, value in response.outputs.items():
        requested = wanted.get(name)
        if requested is not None and requested.shared_memory is not None:
            entries.append(_to_shared(name, value, requested.shared_memory))
            continue
        choice = requested.binary if requested is not None else None
        as_binary = request.binary_output if choice is None else choice
        entry, chunk = _encode_output(name, value, as_binary)
        entries.append(entry)
        if chunk is not None:
            chunks.append(chunk)
    head: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": entries,
    }
    if response.id is not None:
        head["id"] = response.id
    if response.parameters:
        head["parameters"] = response.parameters
    header = numbers_dumps(head, (e["data"] for e in entries if isinstance(e.get("data"), np.ndarray)))
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _to_shared(name: str, value: np.ndarray[Any, Any], shared: SharedTensor) -> dict[str, Any]:
    """An output written into shared memory: its entry is its name, datatype and shape, no data and no
    ``parameters``, as Triton answers it: Triton's C++ client (perf_analyzer's) reads an output entry that has
    ``parameters`` as binary data and fails without their ``binary_data_size``."""
    shared.write(name, raw_bytes(value))
    return {"name": name, "datatype": dtype_of_array(value).v2, "shape": list(value.shape)}


def _encode_output(name: str, value: np.ndarray[Any, Any], binary: bool) -> tuple[dict[str, Any], bytes | None]:
    dtype = dtype_of_array(value)
    entry: dict[str, Any] = {"name": name, "datatype": dtype.v2, "shape": list(value.shape)}
    if binary:
        raw = raw_bytes(value)
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    if dtype.name == "string":
        entry["data"] = [_text(x) for x in value.ravel()]
    elif dtype.name in ("float16", "bfloat16"):
        entry["data"] = value.astype(np.float32).ravel()
    else:
        entry["data"] = value.ravel()  # C order: a view of a C-contiguous array, else a contiguous copy (orjson's need)
    return entry, None


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return str(value)
