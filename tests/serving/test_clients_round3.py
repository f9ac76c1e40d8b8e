"""Real clients, round 3: the calls of tritonclient and tensorflow-serving-api no other test made, answered as
Triton 2.x and TF Serving 2.x answer them.

- ``ModelStreamInfer``: a stream's answers come in the order of its requests, errors included, as Triton answers a
  model that is not decoupled (its ``stream_infer_handler.cc`` queues each response behind the ones before it).
- TF Serving REST: a version label the model does not define is its InvalidArgument (400, not 404), and a path
  naming both a version and a label its malformed request (``http_rest_api_util.cc``'s paths take one or the other).
- TF Serving gRPC: ``output_filter`` checked as ``predict_util.cc`` checks it, in its words (an alias the signature
  lacks, one named twice), and ``ModelService.HandleReloadConfigRequest`` answered, not a Python exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as triton_aio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_v2 import build_grpc_server
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.processes import until


@contextlib.asynccontextmanager
async def _served_in_process(repo: Path) -> AsyncIterator[tuple[DataPlane, str]]:
    """A data plane whose batches never run on the event loop (``fakes.GATE`` may hold echo), and its gRPC address."""
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0, inline_below_ms=0))
    await plane.start()
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield plane, f"127.0.0.1:{port}"
    finally:
        fakes.GATE.set()
        await server.stop(grace=None)
        await plane.close()


def _failed(plane: DataPlane, model: str) -> float:
    """modelport_requests_total of ``model`` over the v2 stream with any outcome but success."""
    page = generate_latest(plane.metrics.exposition).decode()
    samples = [s for f in text_string_to_metric_families(page) for s in f.samples]
    return sum(
        s.value
        for s in samples
        if s.name == "modelport_requests_total"
        and s.labels.get("model") == model
        and s.labels.get("protocol") == "v2-grpc-stream"
        and s.labels.get("outcome") != "success"
    )


def _echo_inputs(value: float, columns: int = 3) -> list[Any]:
    tensor = triton_aio.InferInput("x", [1, columns], "FP32")
    tensor.set_data_from_numpy(np.full((1, columns), value, dtype=np.float32))
    return [tensor]


async def test_a_stream_answers_in_the_order_of_its_requests_errors_included(repo):
    """The first request waits for its batch (echo held) while the ones after it fail at once and one more runs on
    another model: the answers still come first to last, each with its request id where it has one, as Triton
    answers (tritonclient hands a stream error over without its request id: the order is all a client has)."""
    async with _served_in_process(repo) as (plane, address):
        client = triton_aio.InferenceServerClient(address)
        fakes.GATE.clear()
        held = False

        async def requests() -> AsyncIterator[dict[str, Any]]:
            nonlocal held
            yield {"model_name": "echo", "model_version": "1", "inputs": _echo_inputs(1), "request_id": "first"}
            await until(lambda: plane.in_flight == 1, what="the first request held in its batch")
            held = True
            yield {"model_name": "nope", "inputs": _echo_inputs(2), "request_id": "unknown"}
            yield {"model_name": "ints", "inputs": _echo_inputs(3, columns=4), "request_id": "bad-shape"}
            await until(lambda: _failed(plane, "ints") == 1, what="the bad request refused while the first waits")
            fakes.GATE.set()
            yield {"model_name": "echo", "model_version": "2", "inputs": _echo_inputs(4), "request_id": "last"}

        answers = []
        async for result, error in client.stream_infer(requests()):
            answers.append((result.get_response().id if result else None, str(error) if error else None))
        await client.close()
    assert held
    assert [a[0] for a in answers] == ["first", None, None, "last"], answers
    assert "unknown model: 'nope'" in str(answers[1][1]) and "input 'x'" in str(answers[2][1]), answers
