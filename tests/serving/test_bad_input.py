"""Bad input on every protocol, against a real server process: each case gets its protocol's 4xx / status
code with a message that names the tensor and the expectation; never a 5xx, a hang, a huge allocation or
a crash. One table per protocol (v2 REST JSON, v2 REST binary, v2 gRPC, TF Serving REST, TF Serving gRPC,
TorchServe); the case counts are reported by ``test_matrix_sizes``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from tests.serving import fakes
from tests.serving.processes import Served, serving

LIMIT = 1 << 20  # --max-body-bytes: oversized bodies stay cheap to send
X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
PEAK_GROWTH_MB = 300  # a 10**12-element claim that allocated would blow far past this


def _repo(root: Path) -> Path:
    fakes.write_model(root, "echo", config={"finite_inputs": True})  # y = 2x over FP32 [-1, 3], max batch 8
    fakes.write_identity_model(root, "ident", ["float32", "string", "uint8"])
    return root


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Served]:
    repo = _repo(tmp_path_factory.mktemp("bad-input"))
    log = tmp_path_factory.mktemp("bad-input-log") / "server.log"
    flags = ("--max-body-bytes", str(LIMIT), "--no-golden-check")
    with serving(repo, *flags, log=log, timeout=60) as served:
        before = _peak_rss_mb(served.process.pid)
        yield served
        assert served.process.poll() is None, "the server crashed"
        growth = _peak_rss_mb(served.process.pid) - before
        assert growth < PEAK_GROWTH_MB, f"peak RSS grew by {growth:.0f} MB during the bad-input matrix"
    assert "Traceback" not in log.read_text(), "an unhandled error was logged"


# --- HTTP tables ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Http:
    """One bad HTTP request: what to send, the status and the message fragments that must come back."""

    id: str
    path: str
    status: int
    says: tuple[str, ...]
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    target: bytes | None = None  # raw request target (dot segments unnormalised)


def _v2(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **extra}


def _x(data: Any = X, shape: Any = (2, 3), datatype: str = "FP32", name: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "datatype": datatype,
        "data": data,
        **extra,
    }


INFER = "/v2/models/echo/infer"
DEEP = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": ' + b"[" * 100_000 + b"]" * 100_000
LARGE_DEEP = DEEP + b"}]}" + b" " * 70_000  # > 64 KiB: the simdjson path, then orjson's message

V2_JSON = [
    Http(
        "wrong-dtype",
        INFER,
        400,
        ("input 'x'", "datatype INT32 does not match the model's FP32"),
        _v2(_x([1, 2, 3, 4, 5, 6], datatype="INT32")),
    ),
    Http(
        "unknown-dtype",
        INFER,
        400,
        ("input 'x'", "unknown datatype 'FP99'", "expected one of"),
        _v2(_x(datatype="FP99")),
    ),
    Http("wrong-shape", INFER, 400, ("input 'x'", "shape [3, 2] does not match [-1, 3]"), _v2(_x(shape=(3, 2)))),
    Http("wrong-rank", INFER, 400, ("input 'x'", "shape [6] does not match [-1, 3]"), _v2(_x(shape=(6,)))),
    Http("missing-input", INFER, 400, ("takes inputs ['x']", "missing ['x']"), _v2(_x(name="z"))),
    Http("extra-input", INFER, 400, ("unexpected ['z']",), _v2(_x(), _x(name="z"))),
    Http("duplicate-input", INFER, 400, ("input 'x' is given twice",), _v2(_x(), _x())),
    Http(
        "count-disagrees",
        INFER,
        400,
        ("input 'x'", "shape [2, 3] needs 6 elements, the data has 5"),
        _v2(_x([1, 2, 3, 4, 5])),
    ),
    Http("negative-dim", INFER, 400, ("input 'x'", "non-negative integers"), _v2(_x(shape=(-1, 3)))),
    Http(
        "absurd-dims",
        INFER,
        400,
        ("input 'x'", "needs 1000000000000 elements, the data has 3"),
        _v2(_x([1, 2, 3], shape=(10**6, 10**6))),
    ),
    Http("dim-over-2**40", INFER, 400, ("input 'x'", "below 2**40"), _v2(_x([1], shape=(2**50,)))),
    Http("17-dims", INFER, 400, ("input 'x'", "at most 16"), _v2(_x([1], shape=[1] * 17))),
    Http("shape-not-list", INFER, 400, ("input 'x'", "'shape' must be a list"), _v2(_x(shape="2x3"))),
    Http("strings-as-fp32", INFER, 400, ("input 'x'", "FP32 data must be numbers"), _v2(_x([1, 2, "a", 4, 5, 6]))),
    Http("bools-as-fp32", INFER, 400, ("input 'x'", "FP32 data must be numbers"), _v2(_x([True] * 6))),
    Http(
        "uint8-out-of-range",
        "/v2/models/ident/infer",
        400,
        ("input 'in_uint8'", "UINT8", "within the type's range"),
        _v2(_x([1, 2, 300], (1, 3), "UINT8", "in_uint8")),
    ),
    Http(
        "uint8-fraction",
        "/v2/models/ident/infer",
        400,
        ("input 'in_uint8'", "UINT8", "integers"),
        _v2(_x([1, 2.5, 3], (1, 3), "UINT8", "in_uint8")),
    ),
    Http(
        "bytes-not-strings",
        "/v2/models/ident/infer",
        400,
        ("input 'in_string'", "BYTES data must be strings"),
        _v2(_x([1, 2, 3], (1, 3), "BYTES", "in_string")),
    ),
    Http(
        "bad-base64",
        "/v2/models/ident/infer",
        400,
        ("input 'in_string'", "invalid base64"),
        _v2(_x([{"b64": "@@"}, "a", "b"], (1, 3), "BYTES", "in_string")),
    ),
    Http(
        "batch-over-max",
        INFER,
        400,
        ("batch size 9 exceeds the model's max_batch_size 8",),
        _v2(_x([1.0] * 27, (9, 3))),
    ),
    Http("empty-batch", INFER, 400, ("the batch is empty",), _v2(_x([], (0, 3)))),
    Http(
        "no-data",
        INFER,
        400,
        ("input 'x' has neither 'data' nor binary_data_size",),
        _v2({"name": "x", "shape": [2, 3], "datatype": "FP32"}),
    ),
    Http("input-not-object", INFER, 400, ("each input must be an object",), _v2([1, 2, 3])),
    Http("input-without-name", INFER, 400, ("an input has no 'name'",), _v2({"shape": [1], "datatype": "FP32"})),
    Http("inputs-empty", INFER, 400, ("non-empty 'inputs' list",), {"inputs": []}),
    Http("body-is-array", INFER, 400, ("must be a JSON object",), [1, 2, 3]),
    Http("unknown-output", INFER, 400, ("has no outputs ['zzz']",), _v2(_x(), outputs=[{"name": "zzz"}])),
    Http("id-not-string", INFER, 400, ("id must be a string",), _v2(_x(), id=7)),
    Http("parameters-not-object", INFER, 400, ("parameters must be a JSON object",), _v2(_x(), parameters=[1])),
    Http(  # Triton's JSON takes NaN/Infinity tokens: this model refuses them (finite_inputs), not the parser
        "nan-literal",
        INFER,
        400,
        ("input 'x'", "NaN or Inf"),
        content=b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1, 2]}]}',
    ),
    Http(
        "nan-misspelt",
        INFER,
        400,
        ("not valid JSON",),
        content=b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [nan, 1, 2]}]}',
    ),
    Http(
        "inf-overflow",
        INFER,
        400,
        ("not valid JSON", "infinity"),
        content=b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1e400, 1, 2]}]}',
    ),
    Http("truncated", INFER, 400, ("not valid JSON",), content=orjson.dumps(_v2(_x()))[:-7]),
    Http("not-json", INFER, 400, ("not valid JSON",), content=b"x=1&y=2"),
    Http("empty-body", INFER, 400, ("not valid JSON",), content=b""),
    Http("invalid-utf8", INFER, 400, ("not valid JSON",), content=b'{"inputs": "\xff"}'),
    Http("deeply-nested", INFER, 400, ("not valid JSON",), content=DEEP + b"}]}"),
    Http("deeply-nested-large", INFER, 400, ("not valid JSON",), content=LARGE_DEEP),
    Http("oversized", INFER, 413, ("exceeds the limit of 1048576 bytes",), content=b" " * (LIMIT + 1)),
    Http("unknown-model", "/v2/models/nope/infer", 404, ("Request for unknown model: 'nope' is not found",), _v2(_x())),
    Http("unknown-version", "/v2/models/echo/versions/7/infer", 404, ("version 7 is not found",), _v2(_x())),
    Http("version-not-number", "/v2/models/echo/versions/one/infer", 404, ("version string 'one'",), _v2(_x())),
    Http("version-superscript", "/v2/models/echo/versions/%C2%B2/infer", 404, ("served versions",), _v2(_x())),
    Http(
        "version-5000-digits",
        "/v2/models/echo/versions/" + "9" * 5000 + "/infer",
        404,
        ("served versions",),
        _v2(_x()),
    ),
    Http(
        "name-dot-dot",
        INFER,
        404,
        ("Request for unknown model: '..' is not found",),
        _v2(_x()),
        target=b"/v2/models/../infer",
    ),
    Http(
        "name-encoded-dot-dot",
        "/v2/models/%2e%2e/infer",
        404,
        ("Request for unknown model: '..' is not found",),
        _v2(_x()),
    ),
    Http("name-encoded-slash", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", 404, ("Not Found",), _v2(_x())),
    Http("name-traversal", INFER, 404, ("Not Found",), _v2(_x()), target=b"/v2/models/../../../etc/passwd/infer"),
    Http("name-absolute", "/v2/models/%2Fetc%2Fpasswd/infer", 404, ("Not Found",), _v2(_x())),
    Http("name-nul-byte", "/v2/models/echo%00/infer", 404, ("unknown model",), _v2(_x())),
]


def _binary(header: dict[str, Any], raw: bytes, length: int | str | None = None) -> dict[str, Any]:
    head = orjson.dumps(header)
    return {
        "content": head + raw,
        "headers": {"Inference-Header-Content-Length": str(len(head) if length is None else length)},
    }


def _bx(size: int, shape: list[int] | None = None, name: str = "x", datatype: str = "FP32") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "shape": shape or [2, 3], "datatype": datatype, "parameters": {"binary_data_size": size}}
        ]
    }


RAW = np.array(X, np.float32).tobytes()
NAN = np.array([[1, np.nan, 3]], np.float32).tobytes()
INF = np.array([[1, np.inf, 3]], np.float32).tobytes()
STRINGS = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"bb", b"c"))

V2_BINARY = [
    Http("size-past-body", INFER, 400, ("input 'x'", "binary_data_size 48 does not fit"), **_binary(_bx(48), RAW)),
    Http(
        "size-disagrees-with-shape",
        INFER,
        400,
        ("input 'x'", "shape [2, 3] of FP32 needs 24 bytes, got 20"),
        **_binary(_bx(20), RAW[:20]),
    ),
    Http(
        "absurd-dims",
        INFER,
        400,
        ("input 'x'", "needs 4000000000000 bytes, got 12"),
        **_binary(_bx(12, [10**6, 10**6]), RAW[:12]),
    ),
    Http(
        "trailing-bytes",
        INFER,
        400,
        ("the binary data is 28 bytes but the inputs declare 24",),
        **_binary(_bx(24), RAW + b"\0" * 4),
    ),
    Http("negative-size", INFER, 400, ("input 'x'", "binary_data_size -4 does not fit"), **_binary(_bx(-4), RAW)),
    Http("size-not-int", INFER, 400, ("input 'x'", "binary_data_size '24' does not fit"), **_binary(_bx("24"), RAW)),
    Http(
        "header-length-past-body",
        INFER,
        400,
        ("Inference-Header-Content-Length 99999 is outside the body",),
        **_binary(_bx(24), RAW, 99999),
    ),
    Http(
        "header-length-negative",
        INFER,
        400,
        ("Inference-Header-Content-Length must be a non-negative integer",),
        **_binary(_bx(24), RAW, -1),
    ),
    Http(
        "header-length-text", INFER, 400, ("must be a non-negative integer, got 'abc'",), **_binary(_bx(24), RAW, "abc")
    ),
    Http("header-length-cuts-json", INFER, 400, ("not valid JSON",), **_binary(_bx(24), RAW, 10)),
    Http(
        "nan-forbidden", INFER, 400, ("input 'x'", "NaN or Inf", "only finite numbers"), **_binary(_bx(12, [1, 3]), NAN)
    ),
    Http("inf-forbidden", INFER, 400, ("input 'x'", "NaN or Inf"), **_binary(_bx(12, [1, 3]), INF)),
    Http(
        "wrong-dtype",
        INFER,
        400,
        ("input 'x'", "datatype FP64 does not match the model's FP32"),
        **_binary(_bx(48, datatype="FP64"), RAW * 2),
    ),
    Http(
        "bytes-truncated-prefix",
        "/v2/models/ident/infer",
        400,
        ("input 'in_string'", "truncated BYTES length prefix"),
        **_binary(_bx(len(STRINGS) + 2, [1, 3], "in_string", "BYTES"), STRINGS + b"\1\0"),
    ),
    Http(
        "bytes-element-past-data",
        "/v2/models/ident/infer",
        400,
        ("input 'in_string'", "runs past the data"),
        **_binary(_bx(len(STRINGS) + 5, [1, 3], "in_string", "BYTES"), STRINGS + b"\x09\0\0\0z"),
    ),
    Http(
        "bytes-count-disagrees",
        "/v2/models/ident/infer",
        400,
        ("input 'in_string'", "needs 4 BYTES elements, the data has 3"),
        **_binary(_bx(len(STRINGS), [2, 2], "in_string", "BYTES"), STRINGS),
    ),
    Http("oversized", INFER, 413, ("exceeds the limit",), **_binary(_bx(LIMIT), b"\0" * LIMIT)),
]

TF = "/v1/models/echo:predict"
TF_IDENT = "/v1/models/ident:predict"
IDENT_ROW = {"in_float32": [1.0, 2.0, 3.0], "in_string": ["a", "b", "c"], "in_uint8": [1, 2, 3]}

TF_REST = [
    Http(
        "wrong-dtype",
        TF,
        400,
        ("input 'x'", "do not form a float32 tensor", "numbers"),
        {"instances": [["a", "b", "c"]]},
    ),
    Http("wrong-shape", TF, 400, ("input 'x'", "shape [1, 2] does not match [-1, 3]"), {"instances": [[1, 2]]}),
    Http("ragged", TF, 400, ("input 'x'", "do not form a float32 tensor"), {"instances": [[1, 2, 3], [1]]}),
    Http(
        "missing-input-columns",
        TF_IDENT,
        400,
        ("inputs ['in_uint8'] are missing",),
        {"inputs": {"in_float32": [[1, 2, 3]], "in_string": [["a", "b", "c"]]}},
    ),
    Http(
        "missing-input-rows",
        TF_IDENT,
        400,
        ("an instance has no input 'in_uint8'",),
        {"instances": [{"in_float32": [1, 2, 3], "in_string": ["a", "b", "c"]}]},
    ),
    Http("extra-input-columns", TF, 400, ("unexpected inputs ['zzz']",), {"inputs": {"x": X, "zzz": 1}}),
    Http(
        "extra-input-rows",
        TF_IDENT,
        400,
        ("unexpected inputs ['zzz']",),
        {"instances": [IDENT_ROW, {**IDENT_ROW, "zzz": 1}]},
    ),
    Http(
        "uint8-out-of-range",
        TF_IDENT,
        400,
        ("input 'in_uint8'", "uint8 values must be integers in [0, 255]"),
        {"instances": [{**IDENT_ROW, "in_uint8": [1, 2, 300]}]},
    ),
    Http(
        "uint8-fraction",
        TF_IDENT,
        400,
        ("input 'in_uint8'", "integers in [0, 255]"),
        {"instances": [{**IDENT_ROW, "in_uint8": [1, 2.5, 3]}]},
    ),
    Http(
        "string-not-string",
        TF_IDENT,
        400,
        ("input 'in_string'", "string tensor", "b64"),
        {"instances": [{**IDENT_ROW, "in_string": ["a", 1, "c"]}]},
    ),
    Http(
        "bad-base64",
        TF_IDENT,
        400,
        ("input 'in_string'", "string tensor"),
        {"instances": [{**IDENT_ROW, "in_string": [{"b64": "@@"}, "b", "c"]}]},
    ),
    Http(
        "strings-nested-deeply",
        TF_IDENT,
        400,
        ("input 'in_string'", "string tensor"),
        content=b'{"inputs": {"in_float32": [[1, 2, 3]], "in_uint8": [[1, 2, 3]], "in_string": '
        + b"[" * 1000
        + b'"a"'
        + b"]" * 1000
        + b"}}",
    ),
    Http("numbers-nested-deeply", TF, 400, ("JSON Parse error",), content=b'{"instances": ' + b"[" * 100_000),
    Http(
        "batch-over-max",
        TF,
        400,
        ("batch size 9 exceeds the model's max_batch_size 8",),
        {"instances": [[1, 2, 3]] * 9},
    ),
    # TF Serving's JSON takes NaN/Infinity tokens: this model refuses them (finite_inputs), not the parser
    Http("nan-literal", TF, 400, ("input 'x'", "NaN or Inf"), content=b'{"instances": [[NaN, 1, 2]]}'),
    Http("nan-misspelt", TF, 400, ("JSON Parse error",), content=b'{"instances": [[Nan, 1, 2]]}'),
    Http("truncated", TF, 400, ("JSON Parse error",), content=b'{"instances": [[1, 2, 3]'),
    Http("not-json", TF, 400, ("JSON Parse error",), content=b"instances=1"),
    Http("empty-body", TF, 400, ("JSON Parse error",), content=b""),
    Http("body-not-object", TF, 400, ("must be a JSON object",), [[1, 2, 3]]),
    Http("both-formats", TF, 400, ("Both 'inputs' and 'instances'",), {"instances": X, "inputs": X}),
    Http("neither-format", TF, 400, ("Missing 'inputs' or 'instances' key",), {"x": X}),
    Http("empty-instances", TF, 400, ("'instances' must be a non-empty list",), {"instances": []}),
    Http(
        "unknown-signature",
        TF,
        400,
        ('"other" not found in signature def',),
        {"instances": X, "signature_name": "other"},
    ),
    Http("oversized", TF, 413, ("exceeds the limit",), content=b" " * (LIMIT + 1)),
    Http(
        "unknown-model",
        "/v1/models/nope:predict",
        404,
        ("Servable not found for request: Latest(nope)",),
        {"instances": X},
    ),
    Http(
        "unknown-version",
        "/v1/models/echo/versions/7:predict",
        404,
        ("Servable not found for request: Specific(echo, 7)",),
        {"instances": X},
    ),
    Http(  # TF Serving's errors::InvalidArgument (its http_rest_api_handler_test.cc): a 400
        "unknown-label",
        "/v1/models/echo/labels/canary:predict",
        400,
        ("Unrecognized servable version label",),
        {"instances": X},
    ),
    # TF Serving's paths take versions/(\d+): anything else is its malformed request, past int64 a failed conversion
    Http(
        "version-superscript",
        "/v1/models/echo/versions/%C2%B2:predict",
        400,
        ("Malformed request: POST /v1/models/echo/versions/\u00b2:predict",),
        {"instances": X},
    ),
    Http(
        "version-not-a-number",
        "/v1/models/echo/versions/latest:regress",
        400,
        ("Malformed request: POST /v1/models/echo/versions/latest:regress",),
        {"examples": [{"x": 1.0}]},
    ),
    Http(
        "version-negative",
        "/v1/models/echo/versions/-1:predict",
        400,
        ("Malformed request: POST /v1/models/echo/versions/-1:predict",),
        {"instances": X},
    ),
    Http(
        "version-past-int64",
        "/v1/models/echo/versions/9223372036854775808:predict",
        400,
        ("Failed to convert version: 9223372036854775808 to numeric.",),
        {"instances": X},
    ),
    Http(
        "status-version-not-a-number",
        "/v1/models/echo/versions/1.0",
        400,
        ("Malformed request: GET /v1/models/echo/versions/1.0",),
        method="GET",
    ),
    Http(
        "name-encoded-dot-dot",
        "/v1/models/%2e%2e:predict",
        404,
        ("Servable not found for request: Latest(..)",),
        {"instances": X},
    ),
    Http("name-traversal", TF, 404, ("Not Found",), {"instances": X}, target=b"/v1/models/../../etc/passwd:predict"),
    Http(
        "status-dot-dot",
        "/v1/models/x",
        404,
        ("Could not find any versions of model ..",),
        method="GET",
        target=b"/v1/models/..",
    ),
    Http("status-encoded-slash", "/v1/models/..%2Fetc", 404, ("Not Found",), method="GET"),
]

TS = "/predictions/echo"
ONE = [1, 2, 3]
TORCHSERVE = [
    Http("wrong-dtype", TS, 400, ("input 'x'", "do not form a float32 tensor"), ["a", "b", "c"]),
    Http("wrong-shape", TS, 400, ("input 'x'", "shape [1, 2] does not match [-1, 3]"), [1.0, 2.0]),
    Http("wrong-rank", TS, 400, ("input 'x'", "shape [1, 1, 1, 3] does not match [-1, 3]"), [[[1, 2, 3]]]),
    Http("ragged", TS, 400, ("input 'x'", "do not form a float32 tensor"), [[1, 2, 3], [1]]),
    Http(
        "missing-input",
        "/predictions/ident",
        400,
        ("takes inputs ['in_float32', 'in_string', 'in_uint8']",),
        {"in_float32": [1, 2, 3], "in_string": ["a", "b", "c"]},
    ),
    Http(
        "extra-input",
        "/predictions/ident",
        400,
        ("got ['in_float32', 'in_string', 'in_uint8', 'zzz']",),
        {**IDENT_ROW, "zzz": 1},
    ),
    Http(
        "uint8-out-of-range",
        "/predictions/ident",
        400,
        ("input 'in_uint8'", "integers in [0, 255]"),
        {**IDENT_ROW, "in_uint8": [1, 2, 300]},
    ),
    Http(
        "string-not-string",
        "/predictions/ident",
        400,
        ("input 'in_string'", "string tensor"),
        {**IDENT_ROW, "in_string": [{"a": 1}, "b", "c"]},
    ),
    Http("batch-over-max", TS, 400, ("batch size 9 exceeds",), [[1, 2, 3]] * 9),
    Http(
        "nested-deeply",
        TS,
        400,
        ("the body is not JSON",),
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    ),
    Http(
        "nested-64-deep",
        TS,
        400,
        ("input 'x'", "64 dimensions; at most 32"),
        content=b"[" * 64 + b"1" + b"]" * 64,
        headers={"Content-Type": "application/json"},
    ),
    Http("nan-literal", TS, 400, ("the body is not JSON",), content=b"[NaN, 1, 2]"),
    Http("truncated", TS, 400, ("the body is not JSON",), content=b"[1, 2,"),
    Http("not-json", TS, 400, ("the body is not JSON",), content=b"\x89PNG\r\n"),
    Http("empty-body", TS, 400, ("the body is not JSON",), content=b""),
    Http("oversized", TS, 413, (), content=b" " * (LIMIT + 1)),  # TorchServe's 413 has no body (_message)
    Http("unknown-model", "/predictions/nope", 404, ("Model not found: nope",), [1, 2, 3]),
    Http("unknown-version", "/predictions/echo/7", 404, ("Model version: 7 does not exist for model: echo",), ONE),
    Http("version-superscript", "/predictions/echo/%C2%B2", 404, ("Model version: \u00b2 does not exist",), ONE),
    Http("name-encoded-dot-dot", "/predictions/%2e%2e", 404, ("Model not found: ..",), [1, 2, 3]),
    Http("name-encoded-slash", "/predictions/..%2F..%2Fetc%2Fpasswd", 404, ("resource is not found",), [1, 2, 3]),
    Http("describe-unknown-version", "/models/echo/7", 404, ("Model version: 7 does not exist",), method="GET"),
]

HTTP_TABLES = {"v2-json": V2_JSON, "v2-binary": V2_BINARY, "tfserving-rest": TF_REST, "torchserve": TORCHSERVE}


def _message(protocol: str, response: httpx.Response) -> str:
    """The error message, from the protocol's own error body (a path no route matches: the server's)."""
    if protocol == "torchserve" and response.status_code == 413:  # over max_request_size: no body, as TorchServe's
        assert response.content == b"" and "content-type" not in response.headers, response.text
        return ""
    body = response.json()
    if protocol == "torchserve" and body != {"error": "Not Found"}:
        assert set(body) == {"code", "type", "message"} and body["code"] == response.status_code, body
        return str(body["message"])
    assert set(body) == {"error"}, body
    return str(body["error"])


def _send(server: Served, case: Http) -> httpx.Response:
    extensions = {"target": case.target} if case.target else None
    with httpx.Client(base_url=server.url, timeout=10) as http:
        return http.request(
            case.method,
            case.path,
            json=case.json if case.content is None and case.json is not None else None,
            content=case.content,
            headers=case.headers,
            extensions=extensions,
        )


@pytest.mark.parametrize(
    ("protocol", "case"),
    [(p, c) for p, table in HTTP_TABLES.items() for c in table],
    ids=[f"{p}:{c.id}" for p, table in HTTP_TABLES.items() for c in table],
)
def test_bad_http_input(server, protocol, case):
    started = time.monotonic()
    response = _send(server, case)
    assert time.monotonic() - started < 5, "no hang"
    assert response.status_code == case.status, response.text[:300]
    message = _message(protocol, response)
    for fragment in case.says:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_declared_oversized_body_is_refused_before_it_is_sent(server):
    """A Content-Length over the limit gets 413 at once: the server does not wait for (or read) the body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**12}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after a 413
            answer += chunk
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.1 413") and "connection: close" in text.lower(), text
    assert "exceeds the limit of 1048576 bytes" in text


def test_streamed_oversized_body_stops_being_read_at_the_limit(server):
    """A chunked body with no length: 413 once the limit is crossed, long before the client is done."""
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(4096):  # 256 MiB if the server read it all
            sent += 1
            yield b" " * 65536

    with httpx.Client(base_url=server.url, timeout=10) as http:
        try:
            response = http.post(INFER, content=chunks())
        except httpx.TransportError:  # the server may close the connection while the client still writes
            response = None
    assert sent < 4096, "the client streamed the whole body: the server kept reading"
    if response is not None:
        assert response.status_code == 413


# --- gRPC tables ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One bad gRPC call: a function building the request, the status code and the message fragments."""

    id: str
    build: Any
    code: str
    says: tuple[str, ...]


def _infer(model: str = "echo", version: str = "", **inputs: Any) -> Any:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, spec in inputs.items():
        datatype, shape, values = spec
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if isinstance(values, bytes):
            request.raw_input_contents.append(values)
        elif values is not None:
            field_name = {"FP32": "fp32_contents", "UINT8": "uint_contents", "BYTES": "bytes_contents"}[datatype]
            getattr(tensor.contents, field_name).extend(values)
    return request


def _with_outputs(request: Any, *names: str) -> Any:
    for name in names:
        request.outputs.add(name=name)
    return request


def _duplicate() -> Any:
    request = _infer(x=("FP32", [2, 3], [1.0] * 6))
    request.inputs.append(request.inputs[0])
    return request


def _raw_pair() -> Any:
    request = _infer(x=("FP32", [2, 3], RAW))
    request.raw_input_contents.append(RAW)
    return request


V2_GRPC = [
    Rpc(
        "wrong-dtype",
        lambda: _infer(x=("INT32", [2, 3], np.zeros((2, 3), np.int32).tobytes())),
        "INVALID_ARGUMENT",
        ("input 'x'", "datatype INT32 does not match the model's FP32"),
    ),
    Rpc(
        "unknown-dtype",
        lambda: _infer(x=("FP99", [2, 3], RAW)),
        "INVALID_ARGUMENT",
        ("input 'x'", "unknown datatype 'FP99'"),
    ),
    Rpc(
        "wrong-shape",
        lambda: _infer(x=("FP32", [3, 2], RAW)),
        "INVALID_ARGUMENT",
        ("input 'x'", "shape [3, 2] does not match [-1, 3]"),
    ),
    Rpc("missing-input", lambda: _infer(z=("FP32", [2, 3], RAW)), "INVALID_ARGUMENT", ("missing ['x']",)),
    Rpc(
        "extra-input",
        lambda: _infer(x=("FP32", [2, 3], RAW), z=("FP32", [2, 3], RAW)),
        "INVALID_ARGUMENT",
        ("unexpected ['z']",),
    ),
    Rpc(
        "raw-count-disagrees",
        lambda: _infer(x=("FP32", [2, 3], RAW[:20])),
        "INVALID_ARGUMENT",
        ("input 'x'", "needs 24 bytes, got 20"),
    ),
    Rpc(
        "typed-count-disagrees",
        lambda: _infer(x=("FP32", [2, 3], [1.0] * 5)),
        "INVALID_ARGUMENT",
        ("input 'x'", "needs 6 elements, the data has 5"),
    ),
    Rpc(
        "negative-dim",
        lambda: _infer(x=("FP32", [-1, 3], RAW)),
        "INVALID_ARGUMENT",
        ("input 'x'", "non-negative integers"),
    ),
    Rpc(
        "absurd-dims-raw",
        lambda: _infer(x=("FP32", [10**6, 10**6], RAW[:12])),
        "INVALID_ARGUMENT",
        ("input 'x'", "needs 4000000000000 bytes, got 12"),
    ),
    Rpc(
        "absurd-dims-typed",
        lambda: _infer(x=("FP32", [10**6, 10**6], [1.0, 2.0, 3.0])),
        "INVALID_ARGUMENT",
        ("input 'x'", "needs 1000000000000 elements, the data has 3"),
    ),
    Rpc("nan-forbidden-raw", lambda: _infer(x=("FP32", [1, 3], NAN)), "INVALID_ARGUMENT", ("input 'x'", "NaN or Inf")),
    Rpc(
        "inf-forbidden-typed",
        lambda: _infer(x=("FP32", [1, 3], [1.0, float("inf"), 2.0])),
        "INVALID_ARGUMENT",
        ("input 'x'", "NaN or Inf"),
    ),
    Rpc("raw-contents-mismatch", _raw_pair, "INVALID_ARGUMENT", ("2 raw_input_contents for 1 inputs",)),
    Rpc("duplicate-input", _duplicate, "INVALID_ARGUMENT", ("input 'x' is given twice",)),
    Rpc(
        "fp16-typed",
        lambda: _infer(x=("FP16", [1, 3], None)),
        "INVALID_ARGUMENT",
        ("input 'x'", "FP16 has no typed contents field"),
    ),
    Rpc(
        "uint8-out-of-range",
        lambda: _infer("ident", in_uint8=("UINT8", [1, 3], [1, 2, 300])),
        "INVALID_ARGUMENT",
        ("input 'in_uint8'", "within the type's range"),
    ),
    Rpc("no-inputs", lambda: _infer(), "INVALID_ARGUMENT", ("the request has no inputs",)),
    Rpc(
        "unknown-output",
        lambda: _with_outputs(_infer(x=("FP32", [2, 3], RAW)), "zzz"),
        "INVALID_ARGUMENT",
        ("has no outputs ['zzz']",),
    ),
    Rpc(
        "batch-over-max", lambda: _infer(x=("FP32", [9, 3], [1.0] * 27)), "INVALID_ARGUMENT", ("batch size 9 exceeds",)
    ),
    Rpc("oversized", lambda: _infer(x=("FP32", [1, 3], b"\0" * (LIMIT + 1))), "RESOURCE_EXHAUSTED", ()),
    Rpc(
        "unknown-model",
        lambda: _infer("nope", x=("FP32", [2, 3], RAW)),
        "NOT_FOUND",
        ("Request for unknown model: 'nope' is not found",),
    ),
    Rpc(
        "unknown-version",
        lambda: _infer("echo", "7", x=("FP32", [2, 3], RAW)),
        "NOT_FOUND",
        ("version 7 is not found",),
    ),
    Rpc(
        "version-superscript",
        lambda: _infer("echo", "\u00b2", x=("FP32", [2, 3], RAW)),
        "NOT_FOUND",
        ("served versions",),
    ),
    Rpc(
        "name-traversal",
        lambda: _infer("../../etc/passwd", x=("FP32", [2, 3], RAW)),
        "NOT_FOUND",
        ("Request for unknown model: '../../etc/passwd' is not found",),
    ),
]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.mark.parametrize("case", V2_GRPC, ids=[c.id for c in V2_GRPC])
def test_bad_v2_grpc_input(server, case):
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=lambda m: m.SerializeToString())
        with pytest.raises(grpc.RpcError) as info:
            call(case.build(), timeout=5)
    assert info.value.code() == grpc.StatusCode[case.code], info.value.details()
    for fragment in case.says:
        assert fragment in info.value.details(), f"{fragment!r} not in {info.value.details()!r}"


def test_v2_grpc_garbage_bytes_are_invalid_argument(server):
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(MODEL_INFER)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff not a protobuf", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "undecodable request" in info.value.details()


def test_the_server_still_serves_after_the_matrix(server):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.post(INFER, json=_v2(_x()))
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2, 4, 6, 8, 10, 12]


def test_matrix_sizes(record_property):
    sizes = {
        **{p: len(t) for p, t in HTTP_TABLES.items()},
        "v2-grpc": len(V2_GRPC) + 1,  # + undecodable bytes
        "tfserving-grpc": len(TF_GRPC) + 3,  # + metadata field, status of a path-trick name, undecodable bytes
    }
    for protocol, count in sizes.items():
        record_property(protocol, count)
    print("bad-input cases per protocol:", sizes)
    assert all(count >= 15 for count in sizes.values()), sizes


# --- TF Serving gRPC (the official tensorflow-serving-api messages; the server imports TensorFlow) ----------------


@pytest.fixture(scope="module")
def tf_server(tmp_path_factory) -> Iterator[Served]:
    repo = _repo(tmp_path_factory.mktemp("bad-input-tf"))
    flags = ("--max-body-bytes", str(LIMIT), "--no-golden-check", "--tfserving-grpc")
    with serving(repo, *flags, timeout=120) as served:
        before = _peak_rss_mb(served.process.pid)
        yield served
        assert served.process.poll() is None, "the server crashed"
        growth = _peak_rss_mb(served.process.pid) - before
        assert growth < PEAK_GROWTH_MB, f"peak RSS grew by {growth:.0f} MB during the TF Serving gRPC matrix"


def _predict(inputs: dict[str, Any], model: str = "echo", **spec: Any) -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def _tensor(value: Any = None, dtype: int = 1, dims: list[int] | None = None, **fields: Any) -> Any:
    """A TensorProto: from an array, or by hand (dtype 1 = DT_FLOAT) to claim what the data does not hold."""
    from tensorflow.core.framework import tensor_pb2

    if value is not None:
        import tensorflow as tf

        return tf.make_tensor_proto(value)
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in dims or []:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _unknown_rank() -> Any:
    proto = _tensor(dims=[])
    proto.tensor_shape.unknown_rank = True
    return proto


GOOD = np.array(X, np.float32)
TF_GRPC = [
    Rpc(
        "wrong-dtype",
        lambda: _predict({"x": _tensor(GOOD.astype(np.int32))}),
        "INVALID_ARGUMENT",
        ("input 'x'", "datatype INT32 does not match the model's FP32"),
    ),
    Rpc(
        "string-for-float",
        lambda: _predict({"x": _tensor(np.array([[b"a", b"b", b"c"]]))}),
        "INVALID_ARGUMENT",
        ("input 'x'", "datatype BYTES does not match"),
    ),
    Rpc(
        "wrong-shape",
        lambda: _predict({"x": _tensor(GOOD.reshape(3, 2))}),
        "INVALID_ARGUMENT",
        ("input 'x'", "shape [3, 2] does not match [-1, 3]"),
    ),
    Rpc("missing-input", lambda: _predict({"z": _tensor(GOOD)}), "INVALID_ARGUMENT", ("missing ['x']",)),
    Rpc(
        "extra-input",
        lambda: _predict({"x": _tensor(GOOD), "z": _tensor(GOOD)}),
        "INVALID_ARGUMENT",
        ("unexpected ['z']",),
    ),
    Rpc(
        "content-disagrees",
        lambda: _predict({"x": _tensor(dims=[2, 3], tensor_content=RAW[:20])}),
        "INVALID_ARGUMENT",
        ("input 'x'", "needs 24 bytes of tensor_content, got 20"),
    ),
    Rpc(
        "absurd-dims-no-values",
        lambda: _predict({"x": _tensor(dims=[10**6, 10**6])}),
        "INVALID_ARGUMENT",
        ("input 'x'", "larger than the server accepts"),
    ),
    Rpc(
        "absurd-dims-one-value",
        lambda: _predict({"x": _tensor(dims=[10**6, 10**6], float_val=[1.0])}),
        "INVALID_ARGUMENT",
        ("input 'x'", "larger than the server accepts"),
    ),
    Rpc(
        "absurd-strings-one-value",
        lambda: _predict({"x": _tensor(dtype=7, dims=[10**5, 10**5], string_val=[b"a"])}),
        "INVALID_ARGUMENT",
        ("input 'x'", "larger than the server accepts"),
    ),
    Rpc(
        "broadcast-over-max-batch",
        lambda: _predict({"x": _tensor(dims=[1000, 3], float_val=[1.0])}),
        "INVALID_ARGUMENT",
        ("batch size 1000 exceeds",),
    ),
    Rpc(
        "negative-dim",
        lambda: _predict({"x": _tensor(dims=[-1, 3], float_val=[1.0] * 3)}),
        "INVALID_ARGUMENT",
        ("input 'x'", "known shape of non-negative sizes"),
    ),
    Rpc("unknown-rank", lambda: _predict({"x": _unknown_rank()}), "INVALID_ARGUMENT", ("input 'x'", "known shape")),
    Rpc("variant-dtype", lambda: _predict({"x": _tensor(dtype=21, dims=[1, 3])}), "INVALID_ARGUMENT", ("input 'x'",)),
    Rpc(
        "complex-dtype",
        lambda: _predict({"x": _tensor(GOOD.astype(np.complex64))}),
        "INVALID_ARGUMENT",
        ("complex64 has no tensor data type",),
    ),
    Rpc(
        "nan-forbidden",
        lambda: _predict({"x": _tensor(np.array([[1, np.nan, 3]], np.float32))}),
        "INVALID_ARGUMENT",
        ("input 'x'", "NaN or Inf"),
    ),
    Rpc(
        "batch-over-max",
        lambda: _predict({"x": _tensor(np.ones((9, 3), np.float32))}),
        "INVALID_ARGUMENT",
        ("batch size 9 exceeds",),
    ),
    Rpc(
        "unknown-signature",
        lambda: _predict({"x": _tensor(GOOD)}, signature_name="other"),
        "INVALID_ARGUMENT",
        ('"other" not found in signature def',),
    ),
    Rpc(
        "unknown-label",
        lambda: _predict({"x": _tensor(GOOD)}, version_label="canary"),
        "INVALID_ARGUMENT",
        ("Unrecognized servable version label: canary",),
    ),
    Rpc(
        "oversized",
        lambda: _predict({"x": _tensor(dims=[1, 3], tensor_content=b"\0" * (LIMIT + 1))}),
        "RESOURCE_EXHAUSTED",
        (),
    ),
    Rpc(
        "unknown-model",
        lambda: _predict({"x": _tensor(GOOD)}, model="nope"),
        "NOT_FOUND",
        ("Servable not found for request: Latest(nope)",),
    ),
    Rpc(
        "unknown-version",
        lambda: _predict({"x": _tensor(GOOD)}, version=7),
        "NOT_FOUND",
        ("Servable not found for request: Specific(echo, 7)",),
    ),
    Rpc(
        "name-traversal",
        lambda: _predict({"x": _tensor(GOOD)}, model="../../etc/passwd"),
        "NOT_FOUND",
        ("Servable not found for request: Latest(../../etc/passwd)",),
    ),
]
PREDICT = "/tensorflow.serving.PredictionService/Predict"


@pytest.mark.tf
@pytest.mark.parametrize("case", TF_GRPC, ids=[c.id for c in TF_GRPC])
def test_bad_tfserving_grpc_input(tf_server, case):
    with grpc.insecure_channel(tf_server.grpc) as channel:
        call = channel.unary_unary(PREDICT, request_serializer=lambda m: m.SerializeToString())
        with pytest.raises(grpc.RpcError) as info:
            call(case.build(), timeout=5)
    assert info.value.code() == grpc.StatusCode[case.code], info.value.details()
    for fragment in case.says:
        assert fragment in info.value.details(), f"{fragment!r} not in {info.value.details()!r}"


@pytest.mark.tf
def test_bad_tfserving_grpc_metadata_status_and_garbage(tf_server):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    with grpc.insecure_channel(tf_server.grpc) as channel:
        metadata = channel.unary_unary(
            "/tensorflow.serving.PredictionService/GetModelMetadata", request_serializer=lambda m: m.SerializeToString()
        )
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nonsense"])
        request.model_spec.name = "echo"
        with pytest.raises(grpc.RpcError) as info:
            metadata(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "signature_def" in info.value.details()
        status = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus", request_serializer=lambda m: m.SerializeToString()
        )
        wanted = get_model_status_pb2.GetModelStatusRequest()
        wanted.model_spec.name = "../echo"
        with pytest.raises(grpc.RpcError) as info:
            status(wanted, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        wanted = get_model_status_pb2.GetModelStatusRequest()
        wanted.model_spec.name = "echo"
        wanted.model_spec.version.value = 7  # a version the model lacks: NOT_FOUND, not an empty status list
        with pytest.raises(grpc.RpcError) as info:
            status(wanted, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "Could not find version 7 of model echo"
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(PREDICT)(b"\x0a\xff\xff", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        good = channel.unary_unary(PREDICT, request_serializer=lambda m: m.SerializeToString())
        assert good(_predict({"x": _tensor(GOOD)}), timeout=10) is not None, "still serving after the matrix"
