"""One bad token id among concurrent requests, against the real server over a real ONNX embedding model.

Without a value range in the manifest the bad id reaches onnxruntime inside a batch: that request gets a 400
saying what onnxruntime said about it, and its batch-mates get their outputs. With ``--input ids:...:0..1000``
the server refuses it before batching, on every protocol, naming the input, index, value and range.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving import embedding
from tests.serving.processes import Served, serving

ROUNDS, CONCURRENCY = 4, 16
BAD_IDS = (5000, 1000, -1001, 123456)  # onnxruntime takes -1000..999 (negative ids count from the end)


@dataclass(frozen=True)
class Embeddings:
    server: Served
    open: str  # exported without a value range: a bad id reaches the runtime
    ranged: str  # exported with 0..1000: a bad id is refused before batching


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Iterator[Embeddings]:
    root = tmp_path_factory.mktemp("embedding")
    repo = root / "repo"
    names = embedding.export(repo, "open"), embedding.export(repo, "ranged", "0..1000")
    for name in names:  # a long window so that concurrent requests really share batches
        (repo / name / "config.yaml").write_text("max_queue_delay_ms: 200\nmax_batch_size: 16\n")
    log = root / "server.log"
    with serving(repo, log=log) as server:
        yield Embeddings(server, *names)
    assert "Traceback" not in log.read_text(), "a request's bad values are a 400, not a logged fault"


def _v2(url: str, model: str, ids: list[int]) -> httpx.Response:
    body = {"inputs": [{"name": "ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)


def _batches(url: str, model: str) -> tuple[float, float]:
    """(requests, batches) the model has run, from the batch-requests histogram."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = dict.fromkeys(("sum", "count"), 0.0)
    for kind, value in re.findall(
        rf'modelport_batch_requests_(sum|count)\{{[^}}]*model="{model}"[^}}]*\}} (\S+)', text
    ):
        found[kind] += float(value)
    return found["sum"], found["count"]


def test_a_bad_id_that_reaches_the_runtime_fails_alone_and_its_batch_mates_get_their_outputs(models):
    url = models.server.url
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for bad in BAD_IDS:
            rows = [[1, 2, 3, bad if i == 0 else 4 + i] for i in range(CONCURRENCY)]
            first, *rest = list(pool.map(lambda ids: _v2(url, models.open, ids), rows))
            assert first.status_code == 400, first.text
            said = f"indices element out of data bounds, idx={bad} must be within the inclusive range [-1000,999]"
            assert first.json()["error"] == f"the model rejected the input values: {said}"
            assert [r.status_code for r in rest] == [200] * (CONCURRENCY - 1), [r.text for r in rest]
            for ids, response in zip(rows[1:], rest, strict=True):
                assert response.json()["outputs"][0]["data"] == embedding.table()[ids].ravel().tolist()
    requests, batches = _batches(url, models.open)
    assert requests > batches, f"{requests} requests in {batches} batches: nothing was batched, nothing proven"


def test_a_bad_id_that_reaches_the_runtime_over_grpc_is_invalid_argument(models):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=models.server.grpc)
    tensor = triton.InferInput("ids", [1, 4], "INT64")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 5000]], dtype=np.int64))
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer(models.open, [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message().startswith("the model rejected the input values: indices element out of data bounds")
    client.close()


def _grpc(address: str, model: str, ids: list[int]) -> tuple[int, str]:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=address)
    tensor = triton.InferInput("ids", [1, len(ids)], "INT64")
    tensor.set_data_from_numpy(np.array([ids], dtype=np.int64))
    try:
        client.infer(model, [tensor])
    except triton.InferenceServerException as exc:
        return (400 if exc.status() == "StatusCode.INVALID_ARGUMENT" else 500), exc.message()
    finally:
        client.close()
    return 200, ""


def _call(protocol: str, served: Served, model: str, ids: list[int]) -> tuple[int, str]:
    """(status, error message) of one request of one row over ``protocol`` (gRPC INVALID_ARGUMENT as 400)."""
    if protocol == "v2-grpc":
        return _grpc(served.grpc, model, ids)
    if protocol == "v2-rest":
        response = _v2(served.url, model, ids)
    elif protocol == "tfserving-rest":
        response = httpx.post(f"{served.url}/v1/models/{model}:predict", json={"instances": [ids]}, timeout=30)
    else:
        response = httpx.post(f"{served.url}/predictions/{model}", json=ids, timeout=30)
    body: Any = response.json()  # TorchServe answers a prediction with the bare output
    error = body.get("error") or body.get("message") if isinstance(body, dict) else None
    return response.status_code, str(error or "")


@pytest.mark.parametrize("protocol", ["v2-rest", "tfserving-rest", "v2-grpc", "torchserve"])
def test_a_manifest_range_refuses_a_bad_id_before_batching_on_every_protocol(models, protocol):
    served, model = models.server, models.ranged
    before = _batches(served.url, model)
    for bad in (5000, 1000, -1):
        status, message = _call(protocol, served, model, [1, 2, 3, bad])
        assert status == 400, message
        assert (
            message
            == f"input 'ids': value {bad} at index [0, 3] is outside the model's value range (0 <= value < 1000)"
        )
    assert _batches(served.url, model) == before, "refused before it could join a batch"
    assert _call(protocol, served, model, [0, 2, 3, 999])[0] == 200
    assert _batches(served.url, model)[1] == before[1] + 1
