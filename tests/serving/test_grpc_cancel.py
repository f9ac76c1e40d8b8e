"""gRPC calls cancelled while their request waits for its batch (a raw call cancelled, tritonclient's client
timeout, a stream the client cancels): the request leaves the queue uncomputed and counts as client_closed.

The server runs in the test's event loop over fake runtimes, so a test can hold the model (``fakes.GATE``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as triton
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelport.serving import tracing
from modelport.serving.dataplane import DataPlane
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.inprocess import grpc_served_in_process
from tests.serving.processes import until


@pytest.fixture
async def served(repo: Path) -> AsyncIterator[tuple[DataPlane, str]]:
    async with _served(repo) as both:
        yield both


@contextlib.asynccontextmanager
async def _served(repo: Path) -> AsyncIterator[tuple[DataPlane, str]]:
    """The repository served over gRPC in this process, with the fakes' batch log cleared."""
    async with grpc_served_in_process(repo) as both:
        fakes.BATCH_LOG.clear()
        yield both


def _request(value: float) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="echo", model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([value] * 3)
    return request


def _counted(plane: DataPlane, outcome: str, protocol: str) -> float:
    """modelport_requests_total of echo version 1 over ``protocol`` with ``outcome``, as /metrics shows it."""
    wanted = {"model": "echo", "version": "1", "protocol": protocol, "outcome": outcome}
    page = generate_latest(plane.metrics.exposition).decode()
    samples = [s for f in text_string_to_metric_families(page) for s in f.samples]
    return sum(s.value for s in samples if s.name == "modelport_requests_total" and s.labels == wanted)


async def _held(plane: DataPlane, stub: Any) -> Any:
    """A first call whose batch holds the model (``fakes.GATE`` closed): what comes next waits for it."""
    fakes.GATE.clear()
    first = stub.ModelInfer(_request(1))
    await until(lambda: plane.in_flight == 1, what="the first request in the data plane")
    return first


async def _answered_after(plane: DataPlane, first: Any, stub: Any, protocol: str = "v2-grpc") -> None:
    """Open the model: the first call and one more are answered, and the model computed their rows only."""
    fakes.GATE.set()
    for call in (first, stub.ModelInfer(_request(3))):
        reply = await call
        assert len(reply.outputs[0].contents.fp32_contents) == 3  # typed contents, as the request's
    assert fakes.BATCH_LOG == [1, 1], "the cancelled request was never computed"
    assert _counted(plane, "success", "v2-grpc") == 2.0
    assert _counted(plane, "client_closed", protocol) == 1.0
    assert plane.in_flight == 0


async def test_a_raw_grpc_call_cancelled_while_its_request_waits_is_not_computed(served):
    plane, address = served
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        first = await _held(plane, stub)
        gone = stub.ModelInfer(_request(2))
        await until(lambda: plane.in_flight == 2, what="the second request in the data plane")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await until(lambda: plane.in_flight == 1, what="the cancelled request dropped")
        await _answered_after(plane, first, stub)


async def test_a_tritonclient_call_past_its_client_timeout_while_queued_is_not_computed(served):
    plane, address = served
    client = triton.InferenceServerClient(address)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        first = await _held(plane, stub)
        tensor = triton.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.full((1, 3), 2, dtype=np.float32))
        gone = asyncio.create_task(client.infer("echo", [tensor], model_version="1", client_timeout=3))
        await until(lambda: plane.in_flight == 2, what="the second request in the data plane before its timeout")
        with pytest.raises(InferenceServerException, match="Deadline"):
            await gone
        await until(lambda: plane.in_flight == 1, what="the timed-out request dropped")
        await _answered_after(plane, first, stub)
    await client.close()


async def test_a_stream_cancelled_while_its_request_waits_is_not_computed(served):
    plane, address = served
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        first = await _held(plane, stub)
        stream = stub.ModelStreamInfer(_requests([_request(2)]))
        await until(lambda: plane.in_flight == 2, what="the streamed request in the data plane")
        stream.cancel()
        await until(lambda: plane.in_flight == 1, what="the stream's request dropped")
        await _answered_after(plane, first, stub, protocol="v2-grpc-stream")


async def test_the_span_of_a_cancelled_call_says_client_closed_and_cancelled(repo):
    exporter = InMemorySpanExporter()
    assert tracing.configure(ServerSettings(repository=repo), exporter)
    try:
        async with _served(repo) as (plane, address), grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            first = await _held(plane, stub)
            gone = stub.ModelInfer(_request(2))
            await until(lambda: plane.in_flight == 2, what="the second request in the data plane")
            gone.cancel()
            await until(lambda: plane.in_flight == 1, what="the cancelled request dropped")
            await _answered_after(plane, first, stub)
        tracing.flush()
        spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    finally:
        tracing.shutdown()
    outcomes = sorted((s.attributes or {}).get("modelport.outcome", "") for s in spans)
    assert outcomes == ["client_closed", "success", "success"]
    (cancelled,) = [s for s in spans if s.attributes and s.attributes["modelport.outcome"] == "client_closed"]
    assert cancelled.attributes is not None
    assert cancelled.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert cancelled.status.is_ok, "a client that went away is not a server error"


async def _requests(requests: list[Any]) -> AsyncIterator[Any]:
    """The stream's requests, then the stream held open (the client cancels it)."""
    for request in requests:
        yield request
    await asyncio.Event().wait()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repo"
    fakes.write_model(root, "echo")
    fakes.GATE.set()
    yield root
    fakes.GATE.set()
