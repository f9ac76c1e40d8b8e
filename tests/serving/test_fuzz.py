"""Fuzzing: the whole HTTP API from its OpenAPI document (schemathesis), the tensor codecs (Hypothesis).

The schemathesis run goes against a real server process over fake runtimes: zero 5xx, every status,
content type, header and body as the document says, and schema-invalid requests refused with a 4xx.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import ml_dtypes
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.processes import serving

# Not checked: positive_data_acceptance (a schema-valid tensor of the wrong shape is rightly a 400).
CHECKS = [
    not_a_server_error,
    unsupported_method,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
FUZZ_EXAMPLES = 30  # per operation and phase; ~27 operations
COUNTS: collections.Counter[str] = collections.Counter()


def _document() -> dict:
    from starlette.testclient import TestClient

    app = create_app(build(ServerSettings(repository=Path("."))))
    return TestClient(app).get("/openapi.json").json()


# Triton's trace settings answer 501 whatever is sent (not implemented, and said so: a 5xx to not_a_server_error);
# test_triton_examples.py checks that answer. TorchServe's explanations of these fake models (no TorchServe handler)
# answer its 503 for a model that cannot explain: test_kserve_clients.py checks that, test_torchserve_handlers.py
# the explanations of handlers
schema = schemathesis.openapi.from_dict(_document()).exclude(path_regex=r"trace/setting$|^/explanations/")


@schema.hook("flatmap_path_parameters")
def _real_models_too(context, path_parameters):
    """Half the cases target a served model (and version 1): random names only ever reach the 404 path."""
    if not path_parameters:
        return st.just(path_parameters)
    known = dict(path_parameters)
    if "model" in known:
        known["model"] = "echo"
    if "version" in known:
        known["version"] = "1"
    return st.sampled_from([path_parameters, known])


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print(f"\nfuzz examples run: {dict(sorted(COUNTS.items()))}")


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("fuzz")
    fakes.write_model(repo, "echo")
    with serving(repo, "--max-body-bytes", "65536", timeout=60) as server:
        yield server.url


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_http_api_conforms_to_its_openapi_document(case, fuzz_server):
    COUNTS["requests"] += 1
    response = case.call_and_validate(base_url=fuzz_server, checks=CHECKS, timeout=10)
    COUNTS[f"status {response.status_code}"] += 1


# --- Hypothesis: the tensor codecs, every dtype and shape --------------------------------------------------------

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis.extra.numpy import array_shapes, arrays  # noqa: E402

from modelport.serving.grpc_v2 import _CONTENTS, decode_grpc_request  # noqa: E402
from modelport.serving.v2 import (  # noqa: E402
    InferRequest,
    InferResponse,
    RequestedOutput,
    decode_request,
    encode_raw_tensor,
    encode_response,
)
from modelport.tensors import DTYPES  # noqa: E402

CODEC_EXAMPLES = 300
SHAPES = array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


@st.composite
def tensors(draw, finite: bool, names: tuple[str, ...] = tuple(DTYPES)) -> np.ndarray:
    """Any tensor of any data type; non-finite floats only when ``finite`` is False (JSON cannot carry them)."""
    dtype = DTYPES[draw(st.sampled_from(names))]
    shape = draw(SHAPES)
    count = int(np.prod(shape))
    if dtype.name == "string":
        items = draw(
            st.lists(st.binary(max_size=6) | st.text(max_size=4).map(str.encode), min_size=count, max_size=count)
        )
        return np.array([*items, b""], dtype=object)[:-1].reshape(shape)  # [b""]: keep numpy from making rows
    if dtype.name == "bfloat16":
        # float32 beyond bfloat16's largest finite value rounds to infinity: keep finite draws inside it
        bound = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max) if finite else None
        floats = st.floats(
            width=32,
            min_value=-bound if bound else None,
            max_value=bound,
            allow_nan=not finite,
            allow_infinity=not finite,
        )
        values = draw(arrays(np.float32, shape, elements=floats))
        return values.astype(dtype.np_dtype())
    elements = (
        st.floats(width=8 * dtype.np_dtype().itemsize, allow_nan=not finite, allow_infinity=not finite)
        if dtype.is_float
        else None
    )
    return draw(arrays(dtype.np_dtype(), shape, elements=elements))


def _same(got: np.ndarray, sent: np.ndarray) -> bool:
    if sent.dtype == object:
        return got.shape == sent.shape and list(got.ravel()) == list(sent.ravel())
    return got.dtype == sent.dtype and got.shape == sent.shape and got.tobytes() == sent.tobytes()


@given(tensors(finite=True))
@settings(max_examples=CODEC_EXAMPLES, deadline=None)
def test_v2_json_round_trip(value):
    COUNTS["codec json"] += 1
    encoded, length = encode_response(InferResponse("m", "1", {"t": value}), InferRequest({}))
    assert length is None
    entry = orjson.loads(encoded)["outputs"][0]
    body = {"inputs": [{"name": "t", "shape": entry["shape"], "datatype": entry["datatype"], "data": entry["data"]}]}
    got = decode_request(orjson.dumps(body), None).inputs["t"]
    if value.dtype != object and value.dtype.kind == "f":
        assert got.dtype == value.dtype and np.array_equal(got, value)  # -0.0 may come back as 0.0
    else:
        assert _same(got, value)


@given(tensors(finite=False))
@settings(max_examples=CODEC_EXAMPLES, deadline=None)
def test_v2_binary_round_trip(value):
    COUNTS["codec binary"] += 1
    wanted = InferRequest({}, outputs=(RequestedOutput("t", binary=True),))
    encoded, length = encode_response(InferResponse("m", "1", {"t": value}), wanted)
    assert length is not None
    entry = orjson.loads(encoded[:length])["outputs"][0]
    header = orjson.dumps({"inputs": [{k: entry[k] for k in ("name", "shape", "datatype", "parameters")}]})
    got = decode_request(header + encoded[length:], len(header)).inputs["t"]
    assert _same(got, value)


@given(tensors(finite=False), st.booleans())
@settings(max_examples=CODEC_EXAMPLES, deadline=None)
def test_v2_grpc_round_trip(value, typed):
    from tritonclient.grpc import service_pb2

    COUNTS["codec grpc"] += 1
    datatype, shape, raw = encode_raw_tensor(value)
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=shape)
    if typed and datatype in _CONTENTS:
        values = value.ravel().tolist()
        getattr(tensor.contents, _CONTENTS[datatype]).extend(values)
    else:
        request.raw_input_contents.append(raw)
    got = decode_grpc_request(request).inputs["t"]
    if typed and datatype in _CONTENTS and value.dtype.kind == "f":
        assert got.dtype == value.dtype and np.array_equal(got, value, equal_nan=True)
    else:
        assert _same(got, value)
