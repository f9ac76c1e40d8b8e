"""Triton's own clients (HTTP JSON, HTTP binary, gRPC) against modelport: every dtype, several inputs/outputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelport.tensors import DTYPES
from tests.serving import fakes
from tests.serving.processes import serving

ROOT = Path(__file__).resolve().parents[2]
DTYPE_NAMES = [d for d in DTYPES if d not in ("bfloat16", "string")]


@pytest.fixture(scope="module")
def identity_server(tmp_path_factory) -> Iterator[tuple[str, str]]:
    repo = tmp_path_factory.mktemp("identity")
    fakes.write_identity_model(repo, "identity", [*DTYPE_NAMES, "string"])
    with serving(repo, env={"MODELPORT_GOLDEN_CHECK": "false"}, timeout=60) as server:
        yield server.url.removeprefix("http://"), server.grpc


def _inputs(module, binary: bool | None):
    rng = np.random.default_rng(0)
    tensors = []
    for name in DTYPE_NAMES:
        dtype = DTYPES[name]
        info = np.iinfo(dtype.np_dtype()) if dtype.is_integer else None
        if name == "bool":
            value = rng.random((2, 3)) < 0.5
        elif info is not None:
            value = np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype.np_dtype())
        else:
            value = rng.standard_normal((2, 3)).astype(dtype.np_dtype())
        tensors.append((f"in_{name}", value, dtype.v2))
    tensors.append(("in_string", np.array([[b"a", b"", b"\xc3\xa9"], [b"x", b"yy", b"zzz"]], dtype=object), "BYTES"))
    inputs = []
    for name, value, datatype in tensors:
        tensor = module.InferInput(name, list(value.shape), datatype)
        if binary is None:
            tensor.set_data_from_numpy(value)
        else:
            tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    return inputs, {name: value for name, value, _ in tensors}


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_every_dtype_and_several_inputs_round_trip(identity_server, transport):
    if transport == "grpc":
        import tritonclient.grpc as triton

        client = triton.InferenceServerClient(url=identity_server[1])
        inputs, sent = _inputs(triton, None)
        result = client.infer("identity", inputs)
    else:
        import tritonclient.http as triton

        binary = transport == "http-binary"
        client = triton.InferenceServerClient(url=identity_server[0])
        inputs, sent = _inputs(triton, binary)
        outputs = [triton.InferRequestedOutput(f"out_{n}", binary_data=binary) for n in sent]
        result = client.infer("identity", inputs, outputs=outputs)
    for name, value in sent.items():
        got = result.as_numpy(f"out_{name}")
        assert got is not None and got.shape == value.shape, name
        if value.dtype == object:
            assert [x.encode() if isinstance(x, str) else bytes(x) for x in got.ravel()] == list(value.ravel()), name
        else:
            assert got.dtype == value.dtype and np.array_equal(got, value), name
    client.close()


def test_grpc_errors_carry_status_codes(identity_server):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=identity_server[1])
    inputs, _ = _inputs(triton, None)
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("identity", inputs[:2])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "missing" in info.value.message()
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("identity", inputs, model_version="7")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(triton.InferenceServerException) as info:
        client.load_model("identity")
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True])
def test_http_request_and_response_compression(identity_server, algorithm, binary):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=identity_server[0])
    inputs, sent = _inputs(triton, binary)
    outputs = [triton.InferRequestedOutput(f"out_{n}", binary_data=binary) for n in sent]
    for compression in ({"request_compression_algorithm": algorithm}, {"response_compression_algorithm": algorithm}):
        result = client.infer("identity", inputs, outputs=outputs, **compression)
        assert np.array_equal(result.as_numpy("out_in_float32"), sent["in_float32"]), compression
    client.close()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_is_model_ready_is_false_for_an_unknown_model_or_version(identity_server, transport):
    # Triton answers ModelReady with ready=false (gRPC status OK) for a model or version it does not hold
    if transport == "grpc":
        import tritonclient.grpc as triton

        client = triton.InferenceServerClient(url=identity_server[1])
    else:
        import tritonclient.http as triton

        client = triton.InferenceServerClient(url=identity_server[0])
    assert client.is_model_ready("identity") and client.is_model_ready("identity", "1")
    assert client.is_model_ready("nope") is False
    assert client.is_model_ready("identity", "7") is False
    client.close()


@pytest.mark.parametrize("transport", ["http-json", "grpc"])
def test_nan_and_infinity_round_trip(identity_server, transport):
    """Triton's JSON takes and writes NaN, Infinity and -Infinity (tritonclient sends them as those tokens)."""
    special = np.array([[np.nan, np.inf, -np.inf], [0.5, -0.0, 1e-3]])
    floats = ("in_float16", "in_float32", "in_float64")
    if transport == "grpc":
        import tritonclient.grpc as triton

        client = triton.InferenceServerClient(url=identity_server[1])
        inputs, _ = _inputs(triton, None)
        options: dict[str, bool] = {}
    else:
        import tritonclient.http as triton

        client = triton.InferenceServerClient(url=identity_server[0])
        inputs, _ = _inputs(triton, False)
        options = {"binary_data": False}
    for tensor in inputs:
        if tensor.name() in floats:
            tensor.set_data_from_numpy(special.astype(DTYPES[tensor.name()[3:]].np_dtype()), **options)
    outputs = [triton.InferRequestedOutput(f"out_{name}", **options) for name in floats]
    result = client.infer("identity", inputs, outputs=outputs)
    for name in floats:
        got = result.as_numpy(f"out_{name}")
        assert got.dtype == DTYPES[name[3:]].np_dtype(), name
        assert np.array_equal(got, special.astype(got.dtype), equal_nan=True), (name, got)
    client.close()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_load_model_config_overrides_it_cannot_apply_are_refused_not_ignored(tmp_path, transport):
    # an override may set what config.yaml holds (tests/serving/test_triton_examples.py); what the manifest says
    # (here the inputs) or a batching option modelport lacks (priority levels) is refused, and so are files
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    with serving(repo, "--model-control", env={"MODELPORT_GOLDEN_CHECK": "false"}, timeout=60) as server:
        if transport == "grpc":
            import tritonclient.grpc as triton

            client = triton.InferenceServerClient(url=server.grpc)
        else:
            import tritonclient.http as triton

            client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        inputs = '[{"name": "z", "data_type": "TYPE_FP32", "dims": [3]}]'
        with pytest.raises(triton.InferenceServerException) as info:
            client.load_model("echo", config='{"max_batch_size": 4, "input": ' + inputs + "}")
        assert info.value.status() in ("501", "StatusCode.UNIMPLEMENTED"), info.value
        assert "changes ['input']" in info.value.message() and "failed to load 'echo'" in info.value.message()
        with pytest.raises(triton.InferenceServerException) as info:
            client.load_model("echo", config='{"dynamic_batching": {"priority_levels": 2}}')
        assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), info.value
        assert "priority_levels" in info.value.message()
        with pytest.raises(triton.InferenceServerException) as info:
            client.load_model("echo", config="{}", files={"file:1/model.onnx": b"\x00"})
        assert "file:1/model.onnx" in info.value.message()
        client.load_model("echo")  # a plain load (re)loads from the repository
        assert client.is_model_ready("echo")
        client.close()
