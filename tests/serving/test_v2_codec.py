"""The v2 codecs for every datatype of the protocol, JSON and binary, both directions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelport.errors import InvalidArgumentError, SpecError
from modelport.serving import v2
from modelport.serving.v2 import InferRequest, InferResponse, RequestedOutput, decode_request, encode_response
from modelport.tensors import DTYPES

NUMERIC = [d for d in DTYPES.values() if d.name not in ("string", "bfloat16")]


def _sample(dtype) -> np.ndarray:
    if dtype.name == "bool":
        return np.array([[True, False, True], [False, False, True]])
    info = np.iinfo(dtype.np_dtype()) if dtype.is_integer else None
    values = [info.min, 0, info.max, 1, 2, 3] if info is not None else [-1.5, 0.0, 2.25, 1e-3, 65504.0, -7.0]
    return np.array(values, dtype=dtype.np_dtype()).reshape(2, 3)


@pytest.mark.parametrize("dtype", NUMERIC, ids=[d.v2 for d in NUMERIC])
def test_json_round_trip(dtype):
    x = _sample(dtype)
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": dtype.v2, "data": x.tolist()}]})
    request = decode_request(body, None)
    assert request.inputs["x"].dtype == x.dtype and np.array_equal(request.inputs["x"], x)
    encoded, length = encode_response(InferResponse("m", "1", {"y": x}), request)
    assert length is None
    output = orjson.loads(encoded)["outputs"][0]
    assert output["datatype"] == dtype.v2 and output["shape"] == [2, 3]
    assert np.array_equal(np.array(output["data"], dtype=x.dtype).reshape(2, 3), x)


@pytest.mark.parametrize("dtype", NUMERIC, ids=[d.v2 for d in NUMERIC])
def test_binary_round_trip(dtype):
    x = _sample(dtype)
    raw = x.astype(x.dtype.newbyteorder("<")).tobytes()
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": dtype.v2, "parameters": {"binary_data_size": len(raw)}}]}
    )
    request = decode_request(header + raw, len(header))
    assert np.array_equal(request.inputs["x"], x)
    wanted = InferRequest({}, outputs=(RequestedOutput("y", binary=True),))
    encoded, length = encode_response(InferResponse("m", "1", {"y": x}), wanted)
    assert length is not None and encoded[length:] == raw


def test_strings_json_with_b64():
    body = orjson.dumps({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["hé", {"b64": "AP8="}]}]})
    request = decode_request(body, None)
    assert list(request.inputs["s"]) == ["hé".encode(), b"\x00\xff"]
    encoded, _ = encode_response(InferResponse("m", "1", {"s": request.inputs["s"]}), request)
    assert orjson.loads(encoded)["outputs"][0]["data"] == ["hé", {"b64": "AP8="}]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT8", [1, 2, 300], "integers within the type's range"),
        ("UINT8", [1, 2, -1], "integers within the type's range"),
        ("INT32", [1, 2, 3.5], "integers within the type's range"),
        ("BOOL", [1, 0, 1], "BOOL data must be true/false"),
        ("BYTES", [1, 2, 3], "BYTES data must be strings"),
    ],
)
def test_values_that_do_not_fit_the_datatype(datatype, data, message):
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": datatype, "data": data}]})
    with pytest.raises(SpecError, match=message):
        decode_request(body, None)


@pytest.mark.parametrize(
    ("header", "length", "message"),
    [
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
            4,
            "needs 8 bytes, got 4",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
            8,
            "the binary data is 8 bytes but the inputs declare 4",
        ),
    ],
)
def test_binary_sizes_must_agree(header, length, message):
    head = orjson.dumps(header)
    with pytest.raises((SpecError, InvalidArgumentError), match=message):
        decode_request(head + b"\0" * length, len(head))


def test_header_length_outside_the_body():
    with pytest.raises(InvalidArgumentError, match="outside the body"):
        decode_request(b"{}", 10)


def test_absurd_shapes_do_not_overflow_into_a_small_count():
    dims = [2**39] * 4 + [2**4]  # int64 product wraps to 0; the real count is 2**160
    body = orjson.dumps({"inputs": [{"name": "x", "shape": dims, "datatype": "FP32", "data": []}]})
    with pytest.raises(SpecError, match="elements, the data has 0"):
        decode_request(body, None)


@pytest.mark.parametrize("dtype", NUMERIC, ids=[d.v2 for d in NUMERIC])
def test_large_json_bodies_decode_exactly_like_small_ones(dtype):
    """Bodies over 64 KiB take the simdjson path; values, errors and nesting must not change."""
    x = np.resize(_sample(dtype), (3000, 30))
    for data in (x.tolist(), x.ravel().tolist()):
        body = orjson.dumps(
            {
                "id": "big",
                "inputs": [{"name": "x", "shape": [3000, 30], "datatype": dtype.v2, "data": data}],
                "parameters": {"p": 1},
            }
        )
        assert len(body) > 64 * 1024
        request = decode_request(body, None)
        assert request.id == "big" and request.parameters == {"p": 1}
        assert request.inputs["x"].dtype == x.dtype and np.array_equal(request.inputs["x"], x)


def _resident_mb() -> float:
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_large_numeric_bodies_land_in_numpy_from_simdjsons_buffer_and_nothing_is_kept():
    """The simdjson path's point: a numeric array becomes a numpy buffer, not Python floats. Compiled, a stub's
    wrong return type once made it fall back to as_list silently and leak each body's buffer (~1.2 MB a
    ResNet-18 request); ``make test`` runs this on the compiled build."""
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    parsed = v2._parse_json(body)
    assert isinstance(parsed["inputs"][0]["data"], np.ndarray), "the large path fell back to Python lists"
    assert np.array_equal(decode_request(body, None).inputs["x"], x)
    for _ in range(3):  # warm: the allocator's arenas and simdjson's parser settle
        decode_request(body, None)
    before = _resident_mb()
    for _ in range(40):
        decode_request(body, None)
    assert _resident_mb() - before < 20, "decoding large bodies keeps memory (a leak of ~1.2 MB each is 48 MB)"


@pytest.mark.parametrize(
    ("datatype", "values", "message"),
    [
        ("INT8", [1, 300], "integers within the type's range"),
        ("INT32", [1, 2.5], "integers within the type's range"),
        ("FP32", [1.0, "x"], "FP32 data must be numbers"),
    ],
)
def test_large_json_bodies_keep_their_errors(datatype, values, message):
    data = values * 20000
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [len(data)], "datatype": datatype, "data": data}]})
    assert len(body) > 64 * 1024
    with pytest.raises(SpecError, match=message):
        decode_request(body, None)
    short = orjson.dumps({"inputs": [{"name": "x", "shape": [7], "datatype": "FP32", "data": [0.5] * 30000}]})
    with pytest.raises(SpecError, match="needs 7 elements, the data has 30000"):
        decode_request(short, None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 2.5], b'"data":[0.1,2.5]'),  # orjson's float32 text, though the header holds a null elsewhere
        ([0.1, float("nan")], b'"data":[0.10000000149011612,NaN]'),  # the tokens, as Triton writes them
        ([float("inf"), -float("inf")], b'"data":[Infinity,-Infinity]'),
    ],
)
def test_only_non_finite_outputs_change_how_the_json_header_is_written(values, expected):
    """orjson writes NaN and infinities as null: a header with a null (here a parameter's) is checked, and only
    non-finite outputs switch to the encoder that writes them as tokens."""
    request = decode_request(
        orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), None
    )
    response = InferResponse("m", "1", {"y": np.array(values, dtype=np.float32)}, parameters={"note": None})
    encoded, length = encode_response(response, request)
    assert length is None and expected in encoded and b'"parameters":{"note":null}' in encoded


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
def test_flat_float_data_takes_one_conversion_with_the_checked_paths_values(datatype):
    values = [0.1, -2.5, 6.0e4, -0.0, 1e-8, 7.0]
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype, "data": values}]}
    got = decode_request(orjson.dumps(body), None).inputs["x"]
    mixed = decode_request(orjson.dumps({"inputs": [{**body["inputs"][0], "data": [*values[:5], 7]}]}), None)
    wanted = np.asarray(values).astype(got.dtype).reshape(2, 3)  # the checked path: float64, then the type
    assert got.shape == (2, 3) and np.array_equal(got, wanted)
    assert np.array_equal(mixed.inputs["x"], wanted), "an int among the floats: the checked path"


@pytest.mark.parametrize("odd", ["0.5", None], ids=["string", "null"])
def test_a_non_float_among_flat_floats_is_refused_as_before(odd):
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.5, odd, 1.5]}]})
    with pytest.raises(SpecError):
        decode_request(body, None)


def test_a_bool_among_flat_floats_is_a_number_as_it_always_was():
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.5, True, 1.5]}]})
    assert decode_request(body, None).inputs["x"].tolist() == [0.5, 1.0, 1.5]
