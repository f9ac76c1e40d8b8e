"""Pipelines (Triton ensembles) over fake models, through the in-process HTTP stack in every protocol."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.types import InferRequest
from tests.serving import fakes

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline" / "config.yaml"
X = [[1.0, 2.0, 3.0]]


def _v2(rows: list[list[float]]) -> dict[str, Any]:
    shape = [len(rows), 3]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": [v for row in rows for v in row]}]}


def _pipeline(repo: Path, name: str, pipeline: dict[str, Any]) -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "config.yaml").write_text(yaml.safe_dump({"pipeline": pipeline}))


def _chain(first: str, second: str = "second", **extra: Any) -> dict[str, Any]:
    """x -> first -> second -> out, two model steps."""
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 3]}],
        "steps": [
            {"model": first, "input_map": {"x": "x"}, "output_map": {"y": "mid"}},
            {"model": second, "input_map": {"x": "mid"}, "output_map": {"y": "out"}},
        ],
        **extra,
    }


@pytest.fixture
def pipe_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    fakes.write_model(root, "first")
    fakes.write_model(root, "second")
    fakes.write_model(root, "poison", runtime="PoisonRuntime")
    fakes.write_model(root, "rejecting", runtime="RejectingRuntime")
    (root / "quadruple").mkdir()
    shutil.copy(EXAMPLE, root / "quadruple" / "config.yaml")
    _pipeline(root, "poisoned", _chain("poison"))
    _pipeline(root, "picky", _chain("rejecting"))
    _pipeline(root, "bounded", _chain("first", max_inflight=1))
    fakes.GATE.set()
    return root


@pytest.fixture
async def plane(pipe_repo: Path) -> AsyncIterator[DataPlane]:
    settings = ServerSettings(repository=pipe_repo, model_control=True, max_queue_delay_ms=0, inline_below_ms=0)
    data_plane = build(settings)
    await data_plane.start()
    yield data_plane
    fakes.GATE.set()
    await data_plane.close()


def _top(row: list[float]) -> dict[str, float]:
    """The example's topk step (k=2, no labels: class indexes) of one quadrupled row."""
    best = np.argsort(-np.array(row), kind="stable")[:2]
    return {str(i): row[i] for i in best}


async def test_the_readme_example_is_served_like_a_model(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/quadruple")).json()
    assert meta["versions"] == ["1"] and meta["platform"] == "ensemble"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["quadrupled", "top"]
    assert (await client.get("/v2/models/quadruple/ready")).status_code == 200
    index = (await client.post("/v2/repository/index", json={})).json()
    assert {"name": "quadruple", "version": "1", "state": "READY", "reason": ""} in index


async def test_v2_json_runs_both_models_and_the_processor(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v2/models/quadruple/infer", json=_v2([[1, 2, 3], [3, 1, 2]]))
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["quadrupled"]["data"] == [4, 8, 12, 12, 4, 8]
    tops = [json.loads(t) for t in outputs["top"]["data"]]
    assert tops == [_top([4, 8, 12]), _top([12, 4, 8])]


async def test_v2_requested_output_only(client: httpx.AsyncClient) -> None:
    body = {**_v2(X), "outputs": [{"name": "quadrupled"}]}
    answer = (await client.post("/v2/models/quadruple/infer", json=body)).json()
    assert [o["name"] for o in answer["outputs"]] == ["quadrupled"]
    bad = await client.post("/v2/models/quadruple/infer", json={**_v2(X), "outputs": [{"name": "nope"}]})
    assert bad.status_code == 400 and "nope" in bad.text


async def test_tfserving_predict(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/models/quadruple:predict", json={"instances": X})
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["predictions"]
    assert row["quadrupled"] == [4, 8, 12] and row["top"] == _top([4, 8, 12]), "the JSON output as JSON"
    status = (await client.get("/v1/models/quadruple")).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


async def test_torchserve_predictions(client: httpx.AsyncClient) -> None:
    answer = await client.post("/predictions/quadruple", json=X[0])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"quadrupled": [4, 8, 12], "top": _top([4, 8, 12])}, "the JSON output as JSON"
    described = (await client.get("/models/quadruple")).json()
    assert described[0]["modelVersion"] == "1" and described[0]["runtime"] == "pipeline"


async def test_a_json_only_pipeline_answers_results_in_json_protocols(pipe_repo: Path, plane: DataPlane) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())["pipeline"]
    spec["outputs"] = spec["outputs"][1:]  # only the topk step's JSON
    _pipeline(pipe_repo, "ranked", spec)
    await plane.load("ranked")
    response = await plane.infer("ranked", None, InferRequest({"x": np.array(X, np.float32)}), "torchserve")
    assert response.results == [_top([4, 8, 12])]


async def test_concurrent_pipeline_requests_batch_in_the_step_model(plane: DataPlane) -> None:
    request = InferRequest({"x": np.array(X, np.float32)})
    batcher = plane.manager.get("first").batcher
    assert batcher is not None
    fakes.GATE.clear()  # the first request's batch blocks in the runtime; the next ones queue behind it
    try:
        tasks = [asyncio.create_task(plane.infer("quadruple", None, request, "v2"))]
        while batcher.in_flight == 0:
            await asyncio.sleep(0)
        tasks += [asyncio.create_task(plane.infer("quadruple", None, request, "v2")) for _ in range(3)]
        while batcher.depth < 3:
            await asyncio.sleep(0)
    finally:
        fakes.GATE.set()
    responses = await asyncio.gather(*tasks)
    assert all(r.outputs["quadrupled"].tolist() == [[4, 8, 12]] for r in responses)
    sizes = [b.batch_size for b in plane.metrics.statistics.snapshot("first", 1).batches]
    assert 3 in sizes, sizes  # the three queued pipeline requests ran as one batch of the step model


async def test_step_models_count_the_pipelines_requests_in_their_statistics(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await client.post("/v2/models/quadruple/infer", json=_v2(X))).status_code == 200
    assert (await client.post("/v2/models/picky/infer", json=_v2([[13, 1, 2]]))).status_code == 400
    stats = {}
    for model in ("first", "second", "rejecting", "quadruple"):
        (entry,) = (await client.get(f"/v2/models/{model}/stats")).json()["model_stats"]
        stats[model] = (entry["inference_stats"]["success"]["count"], entry["inference_stats"]["fail"]["count"])
    assert stats == {"first": (2, 0), "second": (2, 0), "rejecting": (0, 1), "quadruple": (2, 0)}


async def test_metrics_label_the_pipeline_and_the_protocol(client: httpx.AsyncClient) -> None:
    await client.post("/v2/models/quadruple/infer", json=_v2(X))
    await client.post("/v1/models/quadruple:predict", json={"instances": X})
    text = (await client.get("/metrics")).text
    requests = [line for line in text.splitlines() if line.startswith("modelport_requests_total{")]
    assert any('model="quadruple"' in r and 'protocol="v2"' in r and 'outcome="success"' in r for r in requests)
    assert any('model="quadruple"' in r and 'protocol="tfserving-rest"' in r for r in requests)
    assert 'modelport_request_duration_seconds_count{model="quadruple"' in text
    assert 'modelport_batch_size_count{model="second",version="1"}' in text  # its steps batch in their models


async def test_a_failing_step_fails_only_its_request(client: httpx.AsyncClient) -> None:
    poisoned, fine = await asyncio.gather(
        client.post("/v2/models/poisoned/infer", json=_v2([[13, 1, 2]])),
        client.post("/v2/models/poisoned/infer", json=_v2([[1, 1, 2]])),
    )
    assert poisoned.status_code == 500 and "secret" not in poisoned.text
    assert fine.status_code == 200, fine.text
    assert fine.json()["outputs"][0]["data"] == [4, 4, 8]


async def test_a_step_refusing_the_request_stays_a_4xx(client: httpx.AsyncClient) -> None:
    refused = await client.post("/v2/models/picky/infer", json=_v2([[13, 1, 2]]))
    assert refused.status_code == 400, refused.text
    wrong = await client.post("/v2/models/picky/infer", json={"inputs": [{**_v2(X)["inputs"][0], "name": "z"}]})
    assert wrong.status_code == 400 and "takes inputs" in wrong.text


async def test_over_max_inflight_is_a_503_with_retry_after(client: httpx.AsyncClient, plane: DataPlane) -> None:
    request = InferRequest({"x": np.array(X, np.float32)})
    batcher = plane.manager.get("first").batcher
    assert batcher is not None
    fakes.GATE.clear()
    try:
        held = asyncio.create_task(plane.infer("bounded", None, request, "v2"))
        while batcher.in_flight == 0:
            await asyncio.sleep(0)
        refused = await client.post("/v2/models/bounded/infer", json=_v2(X))
    finally:
        fakes.GATE.set()
    assert refused.status_code == 503 and "max_inflight" in refused.text
    assert refused.headers["retry-after"] == "1"
    assert (await held).outputs["out"].tolist() == [[4, 8, 12]]
    assert (await client.post("/v2/models/bounded/infer", json=_v2(X))).status_code == 200


BAD_PIPELINES = {
    "unknown-model": (_chain("nope"), "step 1 (nope): Request for unknown model: 'nope' is not found"),
    "never-produced": (
        {**_chain("first"), "steps": [{"model": "first", "input_map": {"x": "ghost"}, "output_map": {"y": "out"}}]},
        "step 1 (first) consumes ['ghost'], which no step produces",
    ),
    "cycle": (
        {
            **_chain("first"),
            "steps": [
                {"model": "first", "input_map": {"x": "b"}, "output_map": {"y": "out"}},
                {"model": "second", "input_map": {"x": "out"}, "output_map": {"y": "b"}},
            ],
        },
        "the steps form a cycle: step 1 (first), step 2 (second)",
    ),
    "no-output": (
        {**_chain("first"), "outputs": [{"name": "zzz", "datatype": "FP32", "shape": [-1, 3]}]},
        "pipeline outputs ['zzz'] are never produced",
    ),
    "wrong-input": (
        {**_chain("first"), "steps": [{"model": "first", "input_map": {"q": "x"}, "output_map": {"y": "out"}}]},
        "step 1 (first): model 'first' takes inputs ['x']; input_map names ['q'], leaves out ['x']",
    ),
    "wrong-output": (
        {**_chain("first"), "steps": [{"model": "first", "input_map": {"x": "x"}, "output_map": {"w": "out"}}]},
        "step 1 (first): model 'first' has no outputs ['w']",
    ),
    # a tensor's maker and taker disagree: every request would be a 400, so the pipeline is not ready (Triton)
    "input-dtype": (
        {**_chain("first"), "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 3]}]},
        "tensor 'x': pipeline input 'x' (INT64 [-1, 3]) does not fit step 1 (first) input 'x' (FP32 [-1, 3])",
    ),
    "output-shape": (
        {**_chain("first"), "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 4]}]},
        "tensor 'out': step 2 (second) output 'y' (FP32 [-1, 3]) does not fit pipeline output 'out' (FP32 [-1, 4])",
    ),
    "between-models": (
        {
            **_chain("first"),
            "steps": [
                {"model": "first", "input_map": {"x": "x"}, "output_map": {"n": "mid"}},
                {"model": "second", "input_map": {"x": "mid"}, "output_map": {"y": "out"}},
            ],
        },
        "tensor 'mid': step 1 (first) output 'n' (FP32 [-1]) does not fit step 2 (second) input 'x' (FP32 [-1, 3])",
    ),
}


async def test_bad_pipelines_fail_with_their_reason_and_the_rest_serves(
    pipe_repo: Path, plane: DataPlane, client: httpx.AsyncClient
) -> None:
    for name, (spec, _) in BAD_PIPELINES.items():
        _pipeline(pipe_repo, name, spec)
    _pipeline(pipe_repo, "both", {**_chain("first"), "steps": [{"model": "first", "processors": {}}]})
    await plane.manager.reload()
    for name, (_, reason) in BAD_PIPELINES.items():
        ready = await client.get(f"/v2/models/{name}/ready")
        assert ready.status_code == 503 and reason in ready.json()["reason"], (name, ready.json())
        refused = await client.post(f"/v2/models/{name}/infer", json=_v2(X))
        assert refused.status_code in (400, 503) and reason in refused.json()["error"], (name, refused.text)
    index = {row["name"]: row for row in (await client.post("/v2/repository/index", json={})).json()}
    assert index["cycle"]["state"] == "FAILED" and "cycle" in index["cycle"]["reason"]
    assert index["both"]["state"] == "UNAVAILABLE" and "invalid at pipeline.steps.0" in index["both"]["reason"]
    ready = await client.get("/v2/models/both/ready")  # was only "model 'both' has no versions to serve"
    assert ready.status_code == 404 and "invalid at pipeline.steps.0" in ready.json()["error"], ready.text
    assert (await client.post("/v2/models/quadruple/infer", json=_v2(X))).status_code == 200


async def test_readiness_follows_a_step_being_unloaded(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v2/repository/models/second/unload")).status_code == 200
    ready = await client.get("/v2/models/quadruple/ready")
    assert (
        ready.status_code == 503
        and "step 2 (second): Request for unknown model: 'second' is not found" in ready.json()["reason"]
    )
    refused = await client.post("/v2/models/quadruple/infer", json=_v2(X))
    assert refused.status_code == 503 and "not ready" in refused.text
    assert (await client.get("/v2/models/quadruple")).json()["parameters"]["state"] == "FAILED"
    assert (await client.post("/v2/repository/models/second/load")).status_code == 200
    assert (await client.get("/v2/models/quadruple/ready")).status_code == 200


async def test_unload_dependents_unloads_the_pipelines_that_use_the_model(client: httpx.AsyncClient) -> None:
    # Triton's unload_model(m, unload_dependents=True) unloads the ensembles that use m (quadruple and bounded use
    # first; picky and poisoned do not); without it they stay, not ready
    index = {row["name"] for row in (await client.get("/v2/repository/index")).json() if row["state"] == "READY"}
    assert {"quadruple", "bounded", "picky"} <= index
    body = {"parameters": {"unload_dependents": True}}
    assert (await client.post("/v2/repository/models/first/unload", json=body)).status_code == 200
    rows = {row["name"]: row for row in (await client.get("/v2/repository/index")).json()}
    assert rows["first"]["state"] == rows["quadruple"]["state"] == rows["bounded"]["state"] == "UNAVAILABLE"
    assert rows["picky"]["state"] == "READY"
    assert (await client.post("/v2/repository/models/second/unload")).status_code == 200  # picky's 2nd step
    states = {row["name"]: row["state"] for row in (await client.get("/v2/repository/index")).json()}
    assert states["second"] == "UNAVAILABLE" and states["picky"] == "FAILED"  # kept, not ready


async def test_a_pipeline_has_only_version_one(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/models/quadruple/versions/1")).status_code == 200
    assert (await client.get("/v2/models/quadruple/versions/2")).status_code == 404


PARSE = """
import numpy as np


def parse(payloads):
    return [{"x": np.array([[float(v) for v in p.decode().split(",")]], np.float32)} for p in payloads]
"""


async def test_a_custom_pre_step_turns_payloads_into_tensors(pipe_repo: Path, plane: DataPlane) -> None:
    _pipeline(
        pipe_repo,
        "parsed",
        {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 3]}],
            "steps": [
                {"processors": {"pre": [{"kind": "custom", "callable": "parsing:parse"}]},
                 "input_map": {"data": "text"}, "output_map": {"x": "parsed"}},
                {"model": "first", "input_map": {"x": "parsed"}, "output_map": {"y": "out"}},
            ],
        },
    )  # fmt: skip
    (pipe_repo / "parsed" / "parsing.py").write_text(PARSE)
    await plane.load("parsed")
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/v2/models/parsed/ready")).status_code == 200
        answer = await http.post("/predictions/parsed", content=b"1,2,3")  # TorchServe: the raw body
        assert answer.status_code == 200, answer.text
        assert answer.json() == [2, 4, 6]  # one output: its values, as TF Serving's row format
        bad = await http.post("/predictions/parsed", content=b"1,2")  # the step model refuses its shape
        assert bad.status_code == 400, bad.text
        stats = (await http.get("/v2/models/parsed/stats")).json()["model_stats"][0]
        assert stats["name"] == "parsed" and stats["inference_stats"]["success"]["count"] == 1
        metrics = (await http.get("/metrics")).text
    assert 'modelport_preprocess_duration_seconds_count{model="parsed",version="1"} 2.0' in metrics


def test_the_readme_shows_the_example_pipeline() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert EXAMPLE.read_text() in readme


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # each was accepted: a duplicate input shadowed by the first, processors and runtime beside a pipeline ignored
        ({"pipeline": {**_chain("first"), "inputs": [_chain("first")["inputs"][0]] * 2}}, "inputs ['x'] named twice"),
        ({"pipeline": _chain("first"), "processors": {"handler": "image_classifier"}}, "a pipeline runs its own steps"),
        ({"pipeline": _chain("first"), "runtime": "pkg.mod:Runtime"}, "a pipeline runs its own steps"),
        (
            {"pipeline": {**_chain("first"), "steps": [{"input_map": {"x": "x"}, "output_map": {"y": "out"}}]}},
            "a step names a model or holds processors (this one: neither)",  # was "..., not both"
        ),
    ],
)
def test_a_config_a_pipeline_cannot_follow_is_refused_saying_why(tmp_path: Path, config: dict[str, Any], message: str):
    from modelport.errors import InvalidArgumentError
    from modelport.serving.settings import read_model_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidArgumentError) as refused:
        read_model_config(tmp_path)
    assert message in str(refused.value), str(refused.value)
