"""Real clients against an ONNX model nobody here wrote, without a batch dimension.

``img`` uint8 [4, 4] and ``mask`` bool [4] in; ``total`` float32 [] (0-d), ``mask8`` int8 [4] and ``long``
float32 [100000] out: exported with ``modelport export`` and compared with onnxruntime on the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import modelport
from modelport.manifest import read_manifest
from tests.serving.processes import serving

OUTPUTS = ["total", "mask8", "long"]
IMG = np.arange(16, dtype=np.uint8).reshape(4, 4) * 15
MASK = np.array([True, False, True, True])


def _write_onnx(path: Path) -> Path:
    from onnx import TensorProto as T
    from onnx import helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["img"], ["imgf"], to=T.FLOAT),
            helper.make_node("ReduceSum", ["imgf"], ["total"], keepdims=0),
            helper.make_node("Cast", ["mask"], ["mask8"], to=T.INT8),
            helper.make_node("Tile", ["base", "reps"], ["tiled"]),
            helper.make_node("Mul", ["tiled", "total"], ["long"]),
        ],
        "unbatched",
        [helper.make_tensor_value_info("img", T.UINT8, [4, 4]), helper.make_tensor_value_info("mask", T.BOOL, [4])],
        [
            helper.make_tensor_value_info("total", T.FLOAT, []),
            helper.make_tensor_value_info("mask8", T.INT8, [4]),
            helper.make_tensor_value_info("long", T.FLOAT, [100000]),
        ],
        [
            helper.make_tensor("base", T.FLOAT, [10], np.linspace(0, 1, 10).tolist()),
            helper.make_tensor("reps", T.INT64, [1], [10000]),
        ],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _write_flat_onnx(path: Path) -> Path:
    """x [batch, 3] -> flat [batch * 3] (x reshaped to one dimension) and y [batch, 3] = 2x."""
    from onnx import TensorProto as T
    from onnx import helper, save

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("Mul", ["x", "two"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("flat", T.FLOAT, ["n"]),
            helper.make_tensor_value_info("y", T.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor("shape", T.INT64, [1], [-1]), helper.make_tensor("two", T.FLOAT, [], [2.0])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _write_pairs_onnx(path: Path) -> Path:
    """x [4, 2] (no batch dimension) -> doubled [4, 2] and sums [4]: outputs whose first dims agree."""
    from onnx import TensorProto as T
    from onnx import helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["doubled"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["sums"], keepdims=0),
        ],
        "pairs",
        [helper.make_tensor_value_info("x", T.FLOAT, [4, 2])],
        [
            helper.make_tensor_value_info("doubled", T.FLOAT, [4, 2]),
            helper.make_tensor_value_info("sums", T.FLOAT, [4]),
        ],
        [helper.make_tensor("axes", T.INT64, [1], [1])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The repository and onnxruntime's outputs on (IMG, MASK)."""
    import onnxruntime

    folder = tmp_path_factory.mktemp("unbatched")
    source = _write_onnx(folder / "unbatched.onnx")
    repo = folder / "repo"
    report = modelport.export(source=str(source), formats=("onnx",), repository=repo, name="unbatched", quiet=True)
    assert [row.status for row in report.rows] == ["pass"], report.rows
    flat = _write_flat_onnx(folder / "flat.onnx")
    report = modelport.export(source=str(flat), formats=("onnx",), repository=repo, name="flat", quiet=True)
    assert [row.status for row in report.rows] == ["pass"], report.rows
    pairs = _write_pairs_onnx(folder / "pairs.onnx")
    report = modelport.export(source=str(pairs), formats=("onnx",), repository=repo, name="pairs", quiet=True)
    assert [row.status for row in report.rows] == ["pass"], report.rows
    session = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    return repo, dict(zip(OUTPUTS, session.run(OUTPUTS, {"img": IMG, "mask": MASK}), strict=True))


@pytest.fixture(scope="module")
def server(exported) -> Iterator[tuple[str, str]]:
    with serving(exported[0], timeout=60) as served:
        yield served.url, served.grpc


def test_the_manifest_keeps_the_output_shapes_of_a_model_without_batch_dimension(exported):
    manifest = read_manifest(exported[0] / "unbatched-onnx" / "1")
    assert manifest.max_batch_size == 0
    assert {o.name: o.shape for o in manifest.outputs} == {"total": (), "mask8": (4,), "long": (100000,)}


def _triton_inputs(module: Any, binary: bool | None) -> list[Any]:
    inputs = []
    for name, value, datatype in (("img", IMG, "UINT8"), ("mask", MASK, "BOOL")):
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, **({} if binary is None else {"binary_data": binary}))
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_tritonclient_gets_every_output_and_a_requested_subset_in_order(exported, server, transport):
    expected = exported[1]
    if transport == "grpc":
        import tritonclient.grpc as triton

        client: Any = triton.InferenceServerClient(url=server[1])
        metadata = client.get_model_metadata("unbatched-onnx", as_json=True)
        asked = [triton.InferRequestedOutput("long"), triton.InferRequestedOutput("total")]
        inputs = _triton_inputs(triton, None)
    else:
        import tritonclient.http as triton

        binary = transport == "http-binary"
        client = triton.InferenceServerClient(url=server[0].removeprefix("http://"))
        metadata = client.get_model_metadata("unbatched-onnx")
        asked = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("long", "total")]
        inputs = _triton_inputs(triton, binary)
    shapes = {o["name"]: [int(d) for d in o.get("shape", [])] for o in metadata["outputs"]}
    assert shapes == {"total": [], "mask8": [4], "long": [100000]}
    for outputs in (None, asked):
        result = client.infer("unbatched-onnx", inputs, outputs=outputs)
        response = result.get_response(as_json=True) if transport == "grpc" else result.get_response()
        names = [o["name"] for o in response["outputs"]]
        assert names == (OUTPUTS if outputs is None else ["long", "total"])
        for name in names:
            got = result.as_numpy(name)
            assert got.dtype == expected[name].dtype and np.array_equal(got, expected[name]), name
    client.close()


def test_tfserving_rest_columnar_answers_the_outputs_and_rows_say_why_they_cannot(exported, server):
    url = f"{server[0]}/v1/models/unbatched-onnx:predict"
    body = {"signature_name": "serving_default", "inputs": {"img": IMG.tolist(), "mask": MASK.tolist()}}
    reply = requests.post(url, json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    outputs = reply.json()["outputs"]
    assert set(outputs) == set(OUTPUTS)
    for name, value in exported[1].items():
        assert np.array_equal(np.array(outputs[name], dtype=value.dtype), value), name
    # row format: each instance is a row of img and of mask; the 0-d output has no rows to answer
    rows = [{"img": IMG[i].tolist(), "mask": bool(MASK[i])} for i in range(4)]
    reply = requests.post(url, json={"instances": rows}, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "Tensor name: total has no shape information" in reply.json()["error"]


def test_torchserve_answers_a_model_without_batch_dimension_with_all_its_outputs(exported, server):
    body = {"img": IMG.tolist(), "mask": MASK.tolist()}
    reply = requests.post(f"{server[0]}/predictions/unbatched-onnx", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert set(answer) == set(OUTPUTS)
    for name, value in exported[1].items():
        assert np.array_equal(np.array(answer[name], dtype=value.dtype), value), name


def test_torchserve_answers_all_outputs_even_where_their_first_dims_agree(exported, server):
    """``pairs`` has no batch dimension and outputs [4, 2] and [4]: they were answered as 4 row objects (an
    answer whose form depended on whether the first dims happen to agree; a detector keeping 0 boxes got [])."""
    assert read_manifest(exported[0] / "pairs-onnx" / "1").max_batch_size == 0
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    reply = requests.post(f"{server[0]}/predictions/pairs-onnx", json={"x": x.tolist()}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"doubled": (2 * x).tolist(), "sums": x.sum(axis=1).tolist()}


def test_a_model_whose_output_is_not_split_by_rows_is_served_one_request_a_call(exported, server):
    """``flat`` has batch * 3 values: batched requests would get the first rows' values (a 1-row request got 1
    value of another's); such a model is published without batching, each request answered with its own."""
    assert read_manifest(exported[0] / "flat-onnx" / "1").max_batch_size == 0
    config = requests.get(f"{server[0]}/v2/models/flat-onnx/config", timeout=30).json()
    assert config["max_batch_size"] == 0 and config["input"][0]["dims"] == [-1, 3]

    def infer(i: int) -> list[float]:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [i, i + 0.5, -i]}]}
        reply = requests.post(f"{server[0]}/v2/models/flat-onnx/infer", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return {o["name"]: o["data"] for o in reply.json()["outputs"]}["flat"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(infer, range(32)))
    assert answers == [[i, i + 0.5, -i] for i in range(32)]
