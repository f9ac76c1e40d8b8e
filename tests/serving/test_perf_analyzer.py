"""Triton's perf_analyzer (the C++ load generator of tritonclient 2.41.1), unchanged, against ``modelport serve``.

``make perf-analyzer`` (a prerequisite of ``make test``) installs it into ``.tools/perf_analyzer``. Each run is
short: time windows of 400 ms, where any 3 in a row count as stable (``-s 999``); a window that does not (a stall
on a busy machine) costs one more, up to 10. It must exit 0 having measured both sides: the client's throughput
and the server's request counts, which perf_analyzer reads from Triton's statistics extension
(``/v2/models/stats``, gRPC ``ModelStatistics``).

The models: ``double`` (FP32 ``[-1, 3]``, y = 2x), ``words`` (a BYTES identity, ``[-1, 2]``), ``fixed`` (no batch
dimension: ``max_batch_size: 0``, FP32 ``[4, -1]``), ``rows`` (FP32 ``[-1]``: one value per row) and the pipeline
``quadruple`` (``examples/pipeline``: ``first``
and ``second``, then a ``topk`` processors step), which perf_analyzer profiles as a Triton ensemble.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

import modelport
from tests.serving.processes import ROOT, Served, serving

PERF_ANALYZER = ROOT / ".tools" / "perf_analyzer" / "perf_analyzer"
PIPELINE_EXAMPLE = ROOT / "examples" / "pipeline" / "config.yaml"
SHORT = ("--measurement-interval", "400", "--max-trials", "10", "-s", "999")


def _save(path: Path, nodes: list, inputs: list, outputs: list, **weights: object) -> Path:
    from onnx import helper, numpy_helper, save

    tensors = [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, tensors)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _export(source: Path, repo: Path, name: str, max_batch_size: int = 64) -> None:
    report = modelport.export(
        source=str(source),
        formats=("onnx",),
        repository=repo,
        name=name,
        name_template="{name}",
        max_batch_size=max_batch_size,
        quiet=True,
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx import TensorProto as T
    from onnx import helper

    work = tmp_path_factory.mktemp("perf_analyzer")
    repo = work / "repo"

    def doubler(path: Path) -> Path:
        x = helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3])
        y = helper.make_tensor_value_info("y", T.FLOAT, ["batch", 3])
        return _save(path, [helper.make_node("Mul", ["x", "two"], ["y"])], [x], [y], two=np.float32(2))

    for name in ("double", "first", "second"):
        _export(doubler(work / f"{name}.onnx"), repo, name)
    words = [helper.make_tensor_value_info(n, T.STRING, ["batch", 2]) for n in ("text", "same")]
    _export(
        _save(work / "words.onnx", [helper.make_node("Identity", ["text"], ["same"])], words[:1], words[1:]),
        repo,
        "words",
    )
    fixed = [helper.make_tensor_value_info(n, T.FLOAT, [4, "n"]) for n in ("x", "y")]
    _export(_save(work / "fixed.onnx", [helper.make_node("Neg", ["x"], ["y"])], fixed[:1], fixed[1:]), repo, "fixed", 0)
    rows = [helper.make_tensor_value_info(n, T.FLOAT, ["batch"]) for n in ("x", "y")]  # one value per row
    _export(_save(work / "rows.onnx", [helper.make_node("Neg", ["x"], ["y"])], rows[:1], rows[1:]), repo, "rows")
    (repo / "quadruple").mkdir()
    shutil.copy(PIPELINE_EXAMPLE, repo / "quadruple" / "config.yaml")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Served]:
    assert PERF_ANALYZER.exists(), f"{PERF_ANALYZER} is missing: `make perf-analyzer` installs it"
    with serving(repo, timeout=120) as served:
        yield served


def _url(server: Served, protocol: str) -> str:
    return server.url.removeprefix("http://") if protocol == "http" else server.grpc


def perf_analyzer(server: Served, protocol: str, model: str, *flags: str, cwd: Path) -> str:
    """What ``perf_analyzer -m MODEL -u URL -i PROTOCOL FLAGS`` printed; it must exit 0 and have measured the
    server's side too (perf_analyzer reads it from the statistics extension)."""
    command = [str(PERF_ANALYZER), "-m", model, "-u", _url(server, protocol), "-i", protocol, *SHORT, *flags]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{printed[-3000:]}"
    counts = [int(n) for n in re.findall(r"Successful request count: (\d+)", printed)]
    assert counts and all(n > 0 for n in counts), printed[-3000:]
    return printed


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sync_requests_with_a_csv_report(server, protocol, tmp_path):
    printed = perf_analyzer(
        server, protocol, "double", "-b", "8", "--input-data", "zero", "-f", "out.csv", cwd=tmp_path
    )
    (row,) = _rows(tmp_path / "out.csv")
    assert row["Concurrency"] == "1" and float(row["Inferences/Second"]) > 0, row
    assert "Inference count:" in printed and "Batch size: 8" in printed


def test_http_async_over_a_concurrency_range(server, tmp_path):
    perf_analyzer(server, "http", "double", "--async", "--concurrency-range", "1:8:4", "-f", "out.csv", cwd=tmp_path)
    # one row per concurrency; perf_analyzer orders its report by the measurements, not the concurrency
    assert sorted(row["Concurrency"] for row in _rows(tmp_path / "out.csv")) == ["1", "5"]


def test_http_request_rate_range(server, tmp_path):
    printed = perf_analyzer(server, "http", "double", "--request-rate-range", "20:40:20", cwd=tmp_path)
    assert "Request Rate: 20" in printed and "Request Rate: 40" in printed


def test_grpc_streaming(server, tmp_path):
    printed = perf_analyzer(server, "grpc", "double", "--streaming", "--measurement-interval", "1000", cwd=tmp_path)
    assert "Throughput:" in printed


def test_system_shared_memory_for_inputs_and_outputs(server, tmp_path):
    """Over HTTP this failed: an output's entry carried the region's parameters, which Triton's C++ client reads
    as binary data ('attempt to access non-existing object member binary_data_size'). perf_analyzer names its
    regions' objects after the tensors (/dev/shm/x_0_0, /dev/shm/y): every run that uses them is here, one after
    another, so that two never share one under pytest-xdist."""
    shared = ("--shared-memory", "system", "--output-shared-memory-size", "4096")
    for protocol in ("http", "grpc"):
        perf_analyzer(server, protocol, "double", *shared, "-b", "4", cwd=tmp_path)
        perf_analyzer(server, protocol, "words", *shared, "--string-length", "16", cwd=tmp_path)
    status = requests.get(f"{server.url}/v2/systemsharedmemory/status", timeout=30).json()
    assert status == [], status  # perf_analyzer unregistered its regions


def test_random_and_json_input_data(server, tmp_path):
    perf_analyzer(server, "http", "double", "-b", "2", "--input-data", "random", cwd=tmp_path)
    data = {"data": [{"x": [1.0, 2.0, 3.0]}, {"x": [0.5, -1.0, 4.0]}]}
    (tmp_path / "data.json").write_text(json.dumps(data))
    perf_analyzer(server, "grpc", "double", "--input-data", "data.json", cwd=tmp_path)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_inputs_from_string_data_and_random_strings(server, protocol, tmp_path):
    perf_analyzer(server, protocol, "words", "-b", "2", "--string-data", "hello", cwd=tmp_path)
    perf_analyzer(server, protocol, "words", "--string-length", "16", cwd=tmp_path)
    (tmp_path / "words.json").write_text(json.dumps({"data": [{"text": ["ab", "cd"]}, {"text": ["", "é"]}]}))
    perf_analyzer(server, protocol, "words", "--input-data", "words.json", cwd=tmp_path)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_input_that_is_only_the_batch_dimension_takes_the_configurations_shape_too(server, protocol):
    """``[-1]`` is Triton's ``dims: [1]`` with ``reshape: {shape: []}`` in the model configuration: a client that
    builds its request from the configuration sends ``[N, 1]``, taken as ``[N]`` (Triton's reshape). perf_analyzer
    builds it from the metadata (``[-1]``) and stops before sending anything (the README says so)."""
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    module = http_client if protocol == "http" else grpc_client
    client = module.InferenceServerClient(_url(server, protocol))
    config = client.get_model_config("rows")
    config = config if protocol == "http" else json.loads(_json_format(config.config))
    (spec,) = config["input"]
    assert [int(d) for d in spec["dims"]] == [1] and spec["reshape"].get("shape", []) == []  # (JSON: no empty list)
    x = module.InferInput("x", [4, *map(int, spec["dims"])], "FP32")
    x.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(4, 1))
    answer = client.infer("rows", [x]).as_numpy("y")
    np.testing.assert_array_equal(answer, -np.arange(4, dtype=np.float32))
    plain = module.InferInput("x", [4], "FP32")
    plain.set_data_from_numpy(np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(client.infer("rows", [plain]).as_numpy("y"), answer)
    wrong = module.InferInput("x", [4, 2], "FP32")
    wrong.set_data_from_numpy(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(Exception, match=r"shape \[4, 2\] does not match \[-1\]"):
        client.infer("rows", [wrong])


def _json_format(message: object) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(message, preserving_proto_field_name=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shape_of_a_model_without_a_batch_dimension(server, protocol, tmp_path):
    printed = perf_analyzer(server, protocol, "fixed", "--shape", "x:4,5", cwd=tmp_path)
    assert "Inference count:" in printed


def test_version_percentile_service_kind_and_sequence_flags_on_a_plain_model(server, tmp_path):
    """``--sequence-length`` is for sequence models; on a model without sequence batching it changes nothing
    (modelport serves none: a request that names a sequence is a 400)."""
    flags = ("-x", "1", "--percentile=99", "--service-kind", "triton", "--sequence-length", "4", "-f", "out.csv")
    printed = perf_analyzer(server, "http", "double", *flags, cwd=tmp_path)
    assert "Stabilizing using p99 latency" in printed and "p99 latency" in printed
    (row,) = _rows(tmp_path / "out.csv")
    assert int(row["p99 latency"]) > 0, row


def test_metrics_collection_without_gpu_metrics(server, tmp_path):
    """modelport's /metrics has no nv_gpu_* series: perf_analyzer warns that it cannot parse them and goes on."""
    metrics = f"{_url(server, 'http')}/metrics"
    flags = (
        "--collect-metrics",
        "--metrics-url",
        metrics,
        "--metrics-interval",
        "100",
        "--verbose-csv",
        "-f",
        "out.csv",
    )
    printed = perf_analyzer(server, "http", "double", *flags, cwd=tmp_path)
    assert "Server Prometheus Metrics" in printed
    (row,) = _rows(tmp_path / "out.csv")
    assert "Avg GPU Utilization" in row and float(row["Inferences/Second"]) > 0, row


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_pipeline_is_profiled_as_an_ensemble_with_its_composing_models(server, protocol, tmp_path):
    printed = perf_analyzer(server, protocol, "quadruple", "--shape", "x:2,3", cwd=tmp_path)
    assert "Composing models:" in printed
    assert "first, version: 1" in printed and "second, version: 1" in printed
    assert len(re.findall(r"Successful request count: \d+", printed)) == 3  # the pipeline's and its two models'


def test_torchserve_service_kind_posts_the_instance_as_a_multipart_file(server, tmp_path):
    """perf_analyzer's TorchServe kind uploads the file its input data names as the one part of a multipart
    body (``curl -F data=@x.json``): a tensor model's /predictions took it as a body that is not JSON (400)."""
    (tmp_path / "x.json").write_text("[1.5, 2.0, -3.0]")
    (tmp_path / "data.json").write_text(json.dumps({"data": [{"TORCHSERVE_INPUT": [str(tmp_path / "x.json")]}]}))
    command = [str(PERF_ANALYZER), "-m", "double", "-u", _url(server, "http"), "--service-kind", "torchserve"]
    done = subprocess.run([*command, *SHORT, "--input-data", "data.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and "Throughput:" in done.stdout, done.stdout + done.stderr
    with (tmp_path / "x.json").open("rb") as f:
        answer = requests.post(f"{server.url}/predictions/double", files={"data": f}, timeout=30)
    assert answer.status_code == 200 and answer.json() == [3.0, 4.0, -6.0], answer.text
    two = requests.post(f"{server.url}/predictions/double", files={"a": b"[1, 2, 3]", "b": b"[1, 2, 3]"}, timeout=30)
    assert two.status_code == 400 and "one part" in two.json()["message"], two.text
