"""OpenTelemetry traces: the opt-in rule, span structure in process (HTTP and gRPC, batch links, W3C propagation),
trace ids in logs, nothing of the SDK when off, and what a real ``modelport serve --tracing`` exports over OTLP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelport.errors import InvalidArgumentError
from modelport.serving import tracing
from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_v2 import build_grpc_server
from modelport.serving.rest import create_app
from modelport.serving.server import build, configure_logging
from modelport.serving.settings import ServerSettings
from modelport.serving.tracing_otel import CURRENT, RequestSpan, UnsampledSpan, hex_id
from tests.serving import fakes
from tests.serving.otlp import ReceivedSpan, otlp_receiver
from tests.serving.processes import ROOT, serving, until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
INFER_ROUTE = "POST /v2/models/{model}/infer"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    fakes.write_model(root, "echo")
    # a batch runs once it holds two rows: two concurrent requests always share one
    fakes.write_model(root, "pair", config={"max_batch_size": 2, "max_queue_delay_ms": 10_000})
    # a pipeline through echo twice: one request, two queues and two batches
    steps = [
        {"model": "echo", "input_map": {"x": "x"}, "output_map": {"y": "mid"}},
        {"model": "echo", "input_map": {"x": "mid"}, "output_map": {"y": "out"}},
    ]
    tensors = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]}
    tensors["outputs"] = [{"name": "out", "datatype": "FP32", "shape": [-1, 3]}]
    (root / "twice").mkdir(parents=True)
    (root / "twice" / "config.yaml").write_text(json.dumps({"pipeline": {**tensors, "steps": steps}}))
    fakes.GATE.set()
    return root


@pytest.fixture
def exported(repo: Path) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(ServerSettings(repository=repo), exporter)
    yield exporter
    tracing.shutdown()


@pytest.fixture
async def plane(repo: Path, exported: InMemorySpanExporter) -> AsyncIterator[DataPlane]:
    data_plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await data_plane.start()
    yield data_plane
    await data_plane.close()


@pytest.fixture
async def client(plane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.flush()
    return list(exporter.get_finished_spans())


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in finished(exporter) if s.kind is SpanKind.SERVER]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    assert parent.context is not None
    return {s.name: s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id}


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


@pytest.mark.parametrize(
    ("flag", "environ", "on"),
    [
        (None, {}, False),
        (True, {}, True),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (None, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        (None, {"OTEL_SERVICE_NAME": "alone-it-asks-for-nothing"}, False),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
        (False, {"OTEL_TRACES_EXPORTER": "console"}, False),  # --no-tracing wins over the variables
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ],
)
def test_tracing_is_on_with_the_flag_or_the_otel_variables_that_ask_for_traces(tmp_path, flag, environ, on):
    given = {} if flag is None else {"tracing": flag}
    assert tracing.wanted(ServerSettings(repository=tmp_path, **given), environ) is on


def test_the_serve_flags_leave_tracing_to_the_variables_unless_given(tmp_path):
    from modelport.cli import build_parser

    parser = build_parser()
    assert "tracing" not in vars(parser.parse_args(["serve", str(tmp_path)]))
    assert vars(parser.parse_args(["serve", str(tmp_path), "--no-tracing"]))["tracing"] is False
    assert vars(parser.parse_args(["serve", str(tmp_path), "--tracing"]))["tracing"] is True


async def test_an_http_inference_is_one_server_span_under_the_callers_traceparent_with_its_children(client, exported):
    reply = await client.post("/v2/models/echo/infer", json=BODY, headers={"traceparent": TRACEPARENT})
    assert reply.status_code == 200
    spans = finished(exported)
    server = only(spans, INFER_ROUTE)
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    trace_id, span_id = hex_ids(server)
    assert trace_id == TRACE_ID
    assert reply.headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01", "the response names the server span"
    assert {k: server.attributes[k] for k in ("modelport.model", "modelport.protocol", "modelport.outcome")} == {
        "modelport.model": "echo",
        "modelport.protocol": "v2",
        "modelport.outcome": "success",
    }
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v2/models/{model}/infer"
    assert server.attributes["modelport.request_id"] == reply.headers["x-request-id"]
    assert set(children(spans, server)) == {"validate", "queue", "batch"}
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in spans if s.context is not None)


async def test_a_batch_span_links_to_every_request_it_served(client, exported):
    replies = await asyncio.gather(*(client.post("/v2/models/pair/infer", json=BODY) for _ in range(2)))
    assert [r.status_code for r in replies] == [200, 200]
    spans = finished(exported)
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    batch = only(spans, "batch")
    assert len(servers) == 2
    assert {(link.context.trace_id, link.context.span_id) for link in batch.links} == {
        (s.context.trace_id, s.context.span_id) for s in servers if s.context is not None
    }
    assert batch.attributes["modelport.batch.size"] == 2
    assert batch.attributes["modelport.batch.requests"] == 2
    assert batch.attributes["modelport.model"] == "pair"
    queues = [s for s in spans if s.name == "queue"]
    assert sorted(q.parent.span_id for q in queues if q.parent) == sorted(
        s.context.span_id for s in servers if s.context
    )


async def test_a_pipeline_request_has_a_queue_and_a_batch_span_for_each_model_step(client, exported):
    reply = await client.post("/v2/models/twice/infer", json=BODY, headers={"traceparent": TRACEPARENT})
    assert reply.status_code == 200, reply.text
    spans = finished(exported)
    server = only(spans, INFER_ROUTE)
    assert server.context is not None
    under = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
    named = sorted(s.name for s in under)
    assert named.count("queue") == 2 and named.count("batch") == 2, named
    assert named.count("validate") == 2, named  # each step's: the request's own, then a span of its own
    queues = sorted((s for s in under if s.name == "queue"), key=lambda s: s.start_time or 0)
    assert queues[0].end_time is not None and queues[1].start_time is not None
    assert queues[0].end_time <= queues[1].start_time, "the second step queued after the first one's batch began"
    assert all(q.attributes["modelport.batch.requests"] == 1 for q in queues)
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in under if s.context is not None)


async def test_a_request_refused_by_validation_has_a_failed_validate_span_and_no_batch(client, exported):
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    reply = await client.post("/v2/models/echo/infer", json=bad)
    assert reply.status_code == 400
    spans = finished(exported)
    server = only(spans, INFER_ROUTE)
    assert set(children(spans, server)) == {"validate"}
    assert only(spans, "validate").status.status_code is StatusCode.ERROR
    assert server.attributes["modelport.outcome"] == "invalid_spec"
    assert server.attributes["http.response.status_code"] == 400
    assert server.status.status_code is StatusCode.UNSET, "a client error is not the server's"


async def test_routed_paths_get_a_span_named_by_their_route(client, exported):
    reply = await client.get("/v2/models/echo/ready", headers={"traceparent": TRACEPARENT})
    assert reply.status_code == 200
    assert reply.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    span = only(finished(exported), "GET /v2/models/{model}/ready")
    assert span.attributes["http.route"] == "/v2/models/{model}/ready"


async def test_paths_otel_python_excluded_urls_names_are_not_traced(repo, plane, client):
    exporter = InMemorySpanExporter()
    environ = {"OTEL_PYTHON_EXCLUDED_URLS": " health , ^/metrics$"}
    assert tracing.configure(ServerSettings(repository=repo), exporter, environ)
    for path in ("/v2/health/ready", "/v2/health/live", "/metrics", "/v2/models/echo/ready"):
        reply = await client.get(path, headers={"traceparent": TRACEPARENT})
        assert reply.status_code == 200 and ("traceparent" in reply.headers) == path.endswith("echo/ready"), path
    inferred = await client.post("/v2/models/echo/infer", json=BODY, headers={"traceparent": TRACEPARENT})
    assert inferred.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    servers = [s.name for s in finished(exporter) if s.kind is SpanKind.SERVER]
    assert sorted(servers) == ["GET /v2/models/{model}/ready", INFER_ROUTE]


def test_a_bad_otel_python_excluded_urls_is_refused_before_tracing_starts(repo):
    with pytest.raises(InvalidArgumentError, match="OTEL_PYTHON_EXCLUDED_URLS='health,\\(': not a list of regular"):
        tracing.configure(
            ServerSettings(repository=repo), InMemorySpanExporter(), {"OTEL_PYTHON_EXCLUDED_URLS": "health,("}
        )
    assert not tracing.ENABLED


@contextlib.contextmanager
def serving_request(exported: InMemorySpanExporter) -> Iterator[RequestSpan]:
    """A request span made current as the HTTP and gRPC fronts make it, ended when the block ends."""
    active = tracing._active
    assert active is not None
    request = active.begin("request", SpanKind.SERVER, {}, {})
    token = CURRENT.set(request)
    try:
        yield request
    finally:
        CURRENT.reset(token)
        active.end(request)


async def test_processors_can_wrap_their_steps_in_child_spans(exported):
    with serving_request(exported) as request, tracing.span("preprocess", step="resize"):
        pass
    spans = finished(exported)
    preprocess = only(spans, "preprocess")
    assert preprocess.attributes["step"] == "resize"
    assert preprocess.parent is not None and preprocess.parent.span_id == request.context.span_id
    with tracing.span("preprocess"):  # no request span: nothing to be a child of
        pass
    assert len(finished(exported)) == 2


async def test_an_unsampled_request_still_gets_its_traceparent_but_costs_no_spans(repo, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    exporter = InMemorySpanExporter()
    tracing.configure(ServerSettings(repository=repo), exporter)
    data_plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await data_plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(data_plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            reply = await http.post("/v2/models/echo/infer", json=BODY)
        assert reply.status_code == 200
        assert int(reply.headers["traceparent"].split("-")[3], 16) & 1 == 0, "its sampled flag is off"
        assert finished(exporter) == []
    finally:
        await data_plane.close()
        tracing.shutdown()


async def test_an_unsampled_parent_keeps_its_trace_id_and_the_sampled_flag_off(client, exported):
    # the default sampler is parent-based: the caller's decision holds, as the SDK's start_span would keep it
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    reply = await client.post("/v2/models/echo/infer", json=BODY, headers={"traceparent": unsampled})
    assert reply.status_code == 200
    version, trace_id, span_id, flags = reply.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    assert span_id != PARENT_ID, "the response names this server's (unrecorded) span"
    assert finished(exported) == []


@pytest.mark.parametrize("traceparent", [None, f"00-{TRACE_ID}-{PARENT_ID}-00"])
async def test_an_unsampled_request_names_its_trace_alike_in_its_traceparent_and_its_logs(repo, traceparent):
    # ratio 0: no request is sampled, whether it starts a trace or continues an unsampled caller's
    environ = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        exporter = InMemorySpanExporter()
        tracing.configure(ServerSettings(repository=repo), exporter)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    headers = [] if traceparent is None else [(b"traceparent", traceparent.encode()), (b"tracestate", b"k=v")]
    scope = {"type": "http", "method": "POST", "path": "/v2/models/echo/infer", "headers": headers}
    record = logging.LogRecord("modelport.test", logging.INFO, __file__, 1, "inside", None, None)
    try:
        traced = tracing.http_request(scope, send)
        assert traced is not None
        try:
            tracing.TraceIdFilter().filter(record)
            await traced.send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"b")]})
        finally:
            traced.end()
        assert finished(exporter) == []
    finally:
        tracing.shutdown()
    answered = dict(sent[0]["headers"])  # type: ignore[call-overload]
    version, trace_id, span_id, flags = answered[b"traceparent"].decode().split("-")
    assert (version, len(trace_id), len(span_id), int(flags, 16) & 1) == ("00", 32, 16, 0)
    assert record.trace_id == trace_id and answered[b"x-a"] == b"b"
    if traceparent is not None:
        assert (trace_id, answered[b"tracestate"]) == (TRACE_ID, b"k=v") and span_id != PARENT_ID


async def _grpc_infer(address: str, request: service_pb2.ModelInferRequest) -> tuple[grpc.StatusCode, dict[str, str]]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=(("traceparent", TRACEPARENT),)
        )
        with contextlib.suppress(grpc.aio.AioRpcError):  # its code and trailers say how it ended
            await call
        return await call.code(), dict(await call.trailing_metadata())


def _grpc_request(model: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    return request


async def test_a_grpc_inference_is_one_server_span_whose_traceparent_comes_back_in_the_trailers(plane, exported):
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        code, trailers = await _grpc_infer(f"127.0.0.1:{port}", _grpc_request("echo"))
        missing, _ = await _grpc_infer(f"127.0.0.1:{port}", _grpc_request("nobody"))
        # the client has its status once it is sent; the server's handler ends its span a step later
        await until(lambda: len(server_spans(exported)) == 2, what="both server spans ended")
    finally:
        await server.stop(grace=None)
    assert (code, missing) == (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
    spans = server_spans(exported)
    assert [s.name for s in spans] == ["inference.GRPCInferenceService/ModelInfer"] * 2
    served, refused = spans
    assert served.parent is not None and format(served.parent.span_id, "016x") == PARENT_ID
    assert trailers["traceparent"] == f"00-{TRACE_ID}-{hex_ids(served)[1]}-01"
    assert served.attributes["rpc.grpc.status_code"] == 0
    assert served.attributes["modelport.protocol"] == "v2-grpc"
    assert set(children(finished(exported), served)) == {"validate", "queue", "batch"}
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert refused.status.status_code is StatusCode.UNSET


async def test_a_torchserve_grpc_prediction_is_one_server_span_with_the_callers_parent(plane, exported):
    from modelport.serving.torchserve_grpc import SERVICE, messages

    request_type, response_type = messages()["PredictionsRequest"], messages()["PredictionResponse"]
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            predictions = channel.unary_unary(
                f"/{SERVICE}/Predictions",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            call = predictions(
                request_type(model_name="echo", input={"data": b"[1, 2, 3]"}), metadata=(("traceparent", TRACEPARENT),)
            )
            assert json.loads((await call).prediction)["n"] == 12.0
            trailers = dict(await call.trailing_metadata())
        await until(lambda: len(server_spans(exported)) == 1, what="the server span ended")
    finally:
        await server.stop(grace=None)
    (served,) = server_spans(exported)
    assert served.name == f"{SERVICE}/Predictions"
    assert served.parent is not None and format(served.parent.span_id, "016x") == PARENT_ID
    assert trailers["traceparent"] == f"00-{TRACE_ID}-{hex_ids(served)[1]}-01"
    assert {"validate", "queue", "batch"} <= set(children(finished(exported), served))


async def test_grpc_services_otel_python_grpc_excluded_services_names_are_not_traced(repo, plane):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    exporter = InMemorySpanExporter()
    environ = {"OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": " grpc.health.v1.Health ,SomeOther"}
    assert tracing.configure(ServerSettings(repository=repo), exporter, environ)
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), metadata=(("traceparent", TRACEPARENT),)
            )
            assert (await check).status == health_pb2.HealthCheckResponse.SERVING
            assert "traceparent" not in dict(await check.trailing_metadata() or ())
        code, trailers = await _grpc_infer(f"127.0.0.1:{port}", _grpc_request("echo"))
        await until(lambda: len(server_spans(exporter)) == 1, what="the inference's server span ended")
    finally:
        await server.stop(grace=None)
    assert code is grpc.StatusCode.OK and trailers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert [s.name for s in server_spans(exporter)] == ["inference.GRPCInferenceService/ModelInfer"]


@pytest.mark.parametrize("log_json", [True, False])
def test_logs_carry_the_trace_id_next_to_the_request_id(repo, exported, capsys, log_json):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(ServerSettings(repository=repo, tracing=True, log_json=log_json))
    try:
        with serving_request(exported) as request:
            logging.getLogger("modelport.test").warning("inside")
        logging.getLogger("modelport.test").warning("outside")
    finally:
        root.handlers[:], root.level = handlers, level
    inside, outside = capsys.readouterr().err.strip().splitlines()[-2:]
    trace_id = format(request.context.trace_id, "032x")
    if log_json:
        assert json.loads(inside)["trace_id"] == trace_id
        assert "trace_id" not in json.loads(outside)
    else:
        assert f"[- {trace_id}]" in inside and "[- -]" in outside


def test_a_server_without_tracing_never_imports_the_sdk(repo):
    script = f"""
import asyncio, os, sys
for name in [n for n in os.environ if n.startswith("OTEL_")]:
    del os.environ[name]
import httpx
from modelport.serving import tracing
from modelport.serving.grpc_v2 import build_grpc_server
from modelport.serving.rest import create_app
from modelport.serving.server import build, configure_logging
from modelport.serving.settings import ServerSettings

async def main():
    settings = ServerSettings(repository={str(repo)!r}, max_queue_delay_ms=0)
    configure_logging(settings)
    tracing.configure(settings)
    plane = build(settings)
    await plane.start()
    build_grpc_server(plane)
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        reply = await http.post("/v2/models/echo/infer", json={BODY!r})
    await plane.close()
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
    print(reply.status_code, "traceparent" in reply.headers, tracing.ENABLED, loaded)

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.split("\n")[0] == "200 False False []"


def _tree(spans: list[ReceivedSpan]) -> str:
    """The spans of one trace as an indented tree (name, duration, links), for failure messages and the issue."""
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted((s for s in spans if s.parent_span_id == parent), key=lambda s: s.start_ns):
            linked = f" links={len(span.links)}" if span.links else ""
            lines.append(f"{'  ' * depth}{span.name} {span.duration_ms:.3f} ms{linked}")
            walk(span.span_id, depth + 1)

    for root in sorted({s.parent_span_id for s in spans if s.parent_span_id not in ids}):
        walk(root, 0)
    return "\n".join(lines)


def _one_trace(trace_id: str, names: set[str]) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: names <= {s.name for s in spans if s.trace_id == trace_id}


def test_a_traced_server_exports_its_spans_to_an_otlp_http_receiver(repo, tmp_path):
    with otlp_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "modelport-under-test",
        }
        with serving(repo, "--tracing", "--log-json", env=env, log=tmp_path / "server.log") as server:
            reply = httpx.post(f"{server.url}/v2/models/echo/infer", json=BODY, headers={"traceparent": TRACEPARENT})
            assert reply.status_code == 200
            spans = receiver.wait_for(_one_trace(TRACE_ID, {INFER_ROUTE, "validate", "queue", "batch"}))
            code, trailers = asyncio.run(_grpc_infer(server.grpc, _grpc_request("echo")))
            assert code is grpc.StatusCode.OK
            grpc_span = trailers["traceparent"].split("-")[2]
            spans = receiver.wait_for(lambda got: grpc_span in {s.span_id for s in got})
    trace = [s for s in spans if s.trace_id == TRACE_ID]
    tree = _tree(trace)
    print(f"received trace {TRACE_ID}:\n{tree}")
    http_span = next(s for s in trace if s.name == INFER_ROUTE)
    assert http_span.parent_span_id == PARENT_ID, tree
    assert http_span.kind == 2, "SPAN_KIND_SERVER"
    assert http_span.service == "modelport-under-test"
    assert http_span.attributes["modelport.model"] == "echo"
    assert reply.headers["traceparent"] == f"00-{TRACE_ID}-{http_span.span_id}-01"
    # the response the fast HTTP path wrote whole is the span's: its status code, and no error
    assert (http_span.attributes["http.response.status_code"], http_span.status_code) == (200, 0), tree
    assert {s.name for s in trace if s.parent_span_id == http_span.span_id} >= {"validate", "queue", "batch"}, tree
    batch = next(s for s in trace if s.name == "batch" and s.parent_span_id == http_span.span_id)
    assert (TRACE_ID, http_span.span_id) in batch.links
    assert all(s.start_ns <= s.end_ns and http_span.start_ns <= s.start_ns for s in trace), tree


def test_a_stop_that_waits_on_a_collector_that_never_answers_says_so_and_still_exits_0(repo, tmp_path):
    """The exit used to wait silently after the "stopped" line (20 s with the default timeouts, up to 60 s)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), never answers
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",  # longer than the 1 s after which the wait is logged
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",  # only the shutdown export sends them
        }
        with serving(repo, env=env, log=tmp_path / "server.log") as server:
            assert httpx.post(f"{server.url}/v2/models/echo/infer", json=BODY).status_code == 200
    log = (tmp_path / "server.log").read_text()  # serving() required exit code 0
    assert "tracing: exporting the spans still queued before exit" in log, log[-3000:]
    assert log.index("stopped") < log.index("tracing: exporting the spans still queued")


def test_spans_still_queued_at_shutdown_are_exported_before_the_process_exits(repo, tmp_path):
    with otlp_receiver() as receiver:
        # no --tracing: the OTLP endpoint alone turns it on; an hour's delay: only the shutdown flush sends them
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "3600000"}
        with serving(repo, env=env, log=tmp_path / "server.log") as server:
            reply = httpx.post(f"{server.url}/v2/models/echo/infer", json=BODY, headers={"traceparent": TRACEPARENT})
            assert reply.status_code == 200
            assert receiver.spans == []
        spans = receiver.wait_for(_one_trace(TRACE_ID, {INFER_ROUTE, "batch"}), timeout=5)
    assert {s.service for s in spans} == {"modelport"}


def test_ids_are_written_as_the_format_spec_writes_them_and_an_id_out_of_range_whole() -> None:
    numbers = [0, 1, 0xAB, 2**63, 2**64 - 1, 2**64, 2**127 + 5, 2**128 - 1, *(7**k for k in range(1, 45))]
    for number in numbers:
        if number < 2**64:
            assert hex_id(number, 16) == f"{number:016x}"
        assert hex_id(number, 32) == f"{number:032x}"
    assert hex_id(2**64 + 3, 16) == f"{2**64 + 3:016x}"  # a custom id generator's: not cut, as format did
    assert hex_id(-5, 16) == f"{-5:016x}"


def test_a_traceparent_ends_with_its_flags_as_two_hex_digits() -> None:
    trace, span = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7
    for flags in (0, 1, 2, 3, 0x0F, 0xFF):
        expected = f"00-{trace:032x}-{span:016x}-{flags:02x}".encode()
        assert UnsampledSpan(f"{trace:032x}", f"{span:016x}", flags).traceparent() == expected
        sampled = RequestSpan(f"{trace:032x}", f"{span:016x}", flags, "", "", "GET", 2, 0, None)
        assert sampled.traceparent() == expected
