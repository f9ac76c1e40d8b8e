"""Span records: what the exporter makes of them, how the recorder ships them, and the exporter process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson
import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind, StatusCode

from modelport.serving import tracing_process, tracing_spans
from modelport.serving.tracing_otlp import Batches, Encoder, Payload, senders, settle_environment
from modelport.serving.tracing_process import FLUSH_MARGIN_S, LINGER_S, ExporterProcess, _Pacer
from modelport.serving.tracing_records import COMPACT, ChildRecord, Record, expand
from modelport.serving.tracing_spans import Recorder, SpanProcessors, exporter_kinds, readable, resource
from tests.serving.otlp import otlp_grpc_receiver, otlp_receiver

TRACE, SERVER, CALLER = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "0000000000001234"
LINK = (TRACE, "0000000000000099", 1, "")
VALIDATE = ("validate", 10, 20, {}, 0, "", (), ())
BATCH = ("batch", 30, 40, {"modelport.batch.size": 2}, 2, "a request of the batch failed", (), (LINK,))


def request_record(children: Sequence[ChildRecord] = (VALIDATE, BATCH)) -> Record:
    ids = (TRACE, SERVER, 1, "k=v", CALLER, True)
    return ("POST /x", SpanKind.SERVER.value, *ids, 5, 50, {"modelport.model": "echo"}, 0, "", (), (), list(children))


def test_a_record_is_its_span_then_its_children_under_it_with_ids_of_their_own():
    server, validate, batch = readable(request_record(), resource(), RandomIdGenerator())
    assert (server.name, server.kind, server.start_time, server.end_time) == ("POST /x", SpanKind.SERVER, 5, 50)
    assert server.context is not None and server.parent is not None
    ids = (server.context.trace_id, server.context.span_id, server.parent.span_id)
    assert ids == (int(TRACE, 16), int(SERVER, 16), int(CALLER, 16))
    assert server.parent.is_remote and server.context.trace_state.to_header() == "k=v"
    assert server.attributes == {"modelport.model": "echo"}
    for child in (validate, batch):
        assert child.kind is SpanKind.INTERNAL
        assert child.parent == server.context
        assert child.context is not None and child.context.span_id not in (0, int(SERVER, 16))
    assert validate.context.span_id != batch.context.span_id
    assert batch.status.status_code is StatusCode.ERROR and batch.status.description == "a request of the batch failed"
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [(int(TRACE, 16), 0x99)]


class _Listed:
    """A sink that keeps what it is given, and can be told to fail."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.flushed = threading.Event()
        self.failing = False

    def write(self, records: Sequence[Record]) -> None:
        if self.failing:
            raise BrokenPipeError("the exporter process is gone")
        self.records += records

    def flush(self, timeout_s: float) -> None:
        self.flushed.set()

    def close(self) -> None:
        pass


def compact_record(**named: object) -> tuple[object, ...]:
    """A sampled HTTP request as the serving process records it (tracing_records.Compact)."""
    values = {
        "extra": {"sampler.rule": "all"},
        "method": "POST",
        "path": "/v2/models/echo/infer",
        "request_id": "r-1",
        "route": "/v2/models/{model}/infer",
        "model": "echo",
        "version": "1",
        "protocol": "v2",
        "outcome": "success",
        "status": 200,
        "validate": (10, 20),
        "queue": (21, 30, 4, 2),
        "others": [("preprocess", 8, 9, {"items": 1}, 0, "", (), ())],
        **named,
    }
    ids = (COMPACT, "POST /v2/models/{model}/infer", SpanKind.SERVER.value, TRACE, SERVER, 1, "k=v", CALLER)
    named_values = [values[k] for k in ("method", "path", "request_id", "route", "model", "version", "protocol")]
    return (
        *ids,
        5,
        50,
        0,
        "",
        values["extra"],
        *named_values,
        values["outcome"],
        values["status"],
        *values["validate"],
        *values["queue"],
        values["others"],
    )


def test_a_compact_record_expands_to_the_record_of_its_span_and_children():
    expanded = expand(compact_record())
    name, kind, trace, span, flags, state, parent, remote, start, end, attributes = expanded[:11]
    assert (name, kind, trace, span, flags, state, parent, remote, start, end) == (
        "POST /v2/models/{model}/infer",
        SpanKind.SERVER.value,
        TRACE,
        SERVER,
        1,
        "k=v",
        CALLER,
        True,
        5,
        50,
    )
    assert attributes == {
        "sampler.rule": "all",
        "http.request.method": "POST",
        "url.path": "/v2/models/echo/infer",
        "modelport.request_id": "r-1",
        "http.route": "/v2/models/{model}/infer",
        "modelport.model": "echo",
        "modelport.version": "1",
        "modelport.protocol": "v2",
        "modelport.outcome": "success",
        "http.response.status_code": 200,
    }
    assert expanded[11:15] == (0, "", (), ())
    assert list(expanded[15]) == [
        ("validate", 10, 20, {}, 0, "", (), ()),
        ("preprocess", 8, 9, {"items": 1}, 0, "", (), ()),
        ("queue", 21, 30, {"modelport.batch.size": 4, "modelport.batch.requests": 2}, 0, "", (), ()),
    ]


def test_what_a_compact_record_leaves_unset_is_not_an_attribute_or_a_span():
    bare = compact_record(extra=None, route=None, model=None, version=None, protocol=None, outcome=None, status=0)
    expanded = expand(bare)
    assert set(expanded[10]) == {"http.request.method", "url.path", "modelport.request_id"}
    assert list(expand(compact_record(validate=(0, 0), queue=(0, 0, 0, 0), others=None))[15]) == []


def test_a_compact_record_through_json_expands_as_it_was_and_a_record_is_left_as_it_is():
    through = orjson.loads(orjson.dumps([compact_record()]))[0]  # the exporter process's pipe: lists for tuples
    assert orjson.dumps(expand(through)) == orjson.dumps(expand(compact_record()))
    record = request_record()
    assert expand(record) is record
    exporter = InMemorySpanExporter()
    SpanProcessors([SimpleSpanProcessor(exporter)], resource(), RandomIdGenerator()).write([through])
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "POST /v2/models/{model}/infer",
        "preprocess",
        "queue",
        "validate",
    ]


def test_the_recorder_ships_in_order_on_flush_and_on_close():
    sink = _Listed()
    recorder = Recorder(sink)
    records = [request_record([("validate", i, i, {}, 0, "", (), ())]) for i in range(700)]
    for record in records[:600]:
        recorder.append(record)
    recorder.flush(1.0)
    assert sink.flushed.is_set()
    assert sink.records == records[:600]
    for record in records[600:]:
        recorder.append(record)
    recorder.close()
    assert sink.records == records


def test_the_recorder_ships_on_its_own_while_spans_come_and_again_after_an_idle_while():
    written = threading.Event()

    class Signalled(_Listed):
        def write(self, records: Sequence[Record]) -> None:
            super().write(records)
            written.set()

    class Watched:  # the shipper's stop event, noting when it takes the longer wait of a tick with nothing
        def __init__(self, inner: threading.Event) -> None:
            self.inner, self.idle = inner, threading.Event()

        def wait(self, delay: float) -> bool:
            if delay == tracing_spans.SHIP_IDLE_S:
                self.idle.set()
            return self.inner.wait(delay)

        def set(self) -> None:
            self.inner.set()

    sink = Signalled()
    recorder = Recorder(sink)
    watched = Watched(recorder._stop)
    recorder._stop = watched  # type: ignore[assignment]  # read again at each tick
    try:
        for i in range(3):  # each after a tick with none (the shipper's longer wait), then one with a record
            assert watched.idle.wait(10.0), "the shipper took no idle wait"
            watched.idle.clear()
            written.clear()
            record = request_record([("validate", i, i, {}, 0, "", (), ())])
            recorder.append(record)
            assert written.wait(10.0), f"record {i} was not shipped without a flush"
            assert sink.records[-1] == record
    finally:
        recorder.close()
    assert len(sink.records) == 3


def test_an_attached_recorder_ships_from_its_event_loop_with_no_thread_of_its_own():
    class Timed(_Listed):  # notes the thread of each write, and wakes the test
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[int] = set()
            self.written = asyncio.Event()

        def write(self, records: Sequence[Record]) -> None:
            super().write(records)
            self.threads.add(threading.get_ident())
            self.written.set()

    sink = Timed()
    recorder = Recorder(sink)
    records = [request_record([("validate", i, i, {}, 0, "", (), ())]) for i in range(3)]

    async def serve() -> None:
        recorder.attach(asyncio.get_running_loop())
        assert recorder._shipper is None, "the shipping thread has ended"
        recorder.append(records[0])
        await asyncio.wait_for(sink.written.wait(), 10.0)  # shipped by a tick of this loop, without a flush
        assert sink.threads == {threading.get_ident()}
        recorder.append(records[1])
        recorder.flush(1.0)
        assert sink.flushed.is_set()
        recorder.detach()
        recorder.append(records[2])  # after the loop: shipped when the recorder closes

    asyncio.run(serve())
    recorder.close()
    assert sink.records == records


def test_the_exporter_process_never_blocks_a_write_and_delivers_what_waited_once_it_reads(monkeypatch, capfd):
    monkeypatch.setattr(tracing_process, "PIPE_BYTES", 4096)  # a page: filled at once
    process = ExporterProcess(["console"], {"OTEL_SERVICE_NAME": "stalled", "OTEL_BSP_SCHEDULE_DELAY": "10"})
    os.kill(process.process.pid, signal.SIGSTOP)  # it reads nothing until SIGCONT
    try:
        chunk, writes = [request_record((VALIDATE,))] * 20, 0
        while not process._pending:  # every write returns at once, the pipe full or not
            process.write(chunk)
            writes += 1
        monkeypatch.setattr(tracing_process, "MAX_PENDING", len(process._pending) + 1)
        with pytest.raises(tracing_process.BacklogError):
            process.write(chunk)  # refused whole: none of it reaches the exporter
        process.pump()  # still nothing taken: nothing lost either
    finally:
        os.kill(process.process.pid, signal.SIGCONT)
    assert process.flush(30.0)  # the waiting frames first, then the flush's
    process.close()
    assert process.process.returncode == 0
    out = capfd.readouterr().out
    assert out.count('"name": "validate"') == out.count('"name": "POST /x"') == writes * len(chunk)


def test_an_exporter_process_that_dies_with_spans_waiting_is_closed_without_raising():
    process = ExporterProcess([], {})
    os.kill(process.process.pid, signal.SIGSTOP)
    while not process._pending:
        process.write([request_record()] * 50)
    process.process.kill()
    process.process.wait()
    process.close()  # the waiting bytes cannot go: the pipe is closed all the same
    assert process._pipe.closed


def test_the_recorder_drops_what_its_sink_cannot_take_and_never_raises(monkeypatch, caplog):
    monkeypatch.setattr(tracing_spans, "MAX_WAITING", 10)
    sink = _Listed()
    recorder = Recorder(sink)
    recorder._stop.set()  # no shipping but ours
    recorder._shipper.join()
    for _ in range(25):
        recorder.append(request_record())
    recorder.ship()
    assert (len(sink.records), recorder.dropped) == (10, 15)
    sink.failing = True
    recorder.append(request_record())
    recorder.ship()
    assert recorder.dropped == 16
    assert "spans dropped" in caplog.text


def test_span_processors_make_and_hand_on_the_spans_of_each_record():
    exporter = InMemorySpanExporter()
    sink = SpanProcessors([SimpleSpanProcessor(exporter)], resource(), RandomIdGenerator())
    sink.write([request_record(), request_record(children=())])
    assert [s.name for s in exporter.get_finished_spans()] == ["POST /x", "validate", "batch", "POST /x"]


@pytest.mark.parametrize("kinds", [[], ["console"]])
def test_the_exporter_process_starts_flushes_and_exits_once_its_input_closes(kinds, capfd):
    process = ExporterProcess(kinds, {"OTEL_SERVICE_NAME": "in-the-exporter"})
    process.write([request_record()])
    process.flush(5.0)  # the console exporter has printed by now
    process.close()
    assert process.process.returncode == 0
    out = capfd.readouterr().out
    assert ('"name": "validate"' in out and "in-the-exporter" in out) is bool(kinds)


def test_a_dead_exporter_process_costs_its_spans_not_the_requests(caplog):
    process = ExporterProcess([], {})
    process.process.kill()
    process.process.wait()
    recorder = Recorder(process)
    recorder.append(request_record())
    started = time.monotonic()
    assert recorder.flush(5.0) is False  # neither raises, nor waits for an answer that cannot come
    assert time.monotonic() - started < 2.5
    recorder.close()
    assert recorder.dropped == 1


class _Counting(IdGenerator):
    """Span ids 1, 2, 3...: the same ids for two encoders of the same records."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        return 1


def test_the_otlp_encoding_of_records_is_the_sdks_encoding_of_their_spans():
    event = ("exception", {"exception.type": "ValueError", "exception.escaped": False}, 33)
    failing = ("preprocess", 31, 32, {"items": 3, "ratio": 0.5, "tags": ("a", "b")}, 2, "ValueError: x", (event,), ())
    alike = [(name, 1, 2, {"items": value}, 0, "", (), ()) for name, value in (("a", True), ("b", 1.0), ("c", 1))]
    stated = (TRACE, SERVER, 3, "k=v")  # a link's trace state: not written
    long = ("é" * 150, 2**40, 2**62, {"big": 2**40, "negative": -5, "empty": ""}, 1, "", (), (LINK, stated))
    records = [request_record(), request_record((VALIDATE, failing, *alike)), ("GET /x", 1, TRACE, SERVER, 1, "", "")]
    records[2] += (False, 5, 6, {}, 0, "", (), (), [])  # a root span, no trace state
    records += [request_record((long,))] * 200  # lengths of two and three varint bytes
    found = Encoder(resource(), _Counting())
    spans = [span for record in records for span in found.spans(record)]
    ids = _Counting()
    expected = encode_spans([s for record in records for s in readable(record, resource(), ids)])
    assert found.request(spans) == expected.SerializeToString()  # the bytes upb writes for the SDK's messages
    assert found.request(spans[:3]) == found.request(spans[:3]), "attributes made once read the same"
    assert len(expected.resource_spans[0].scope_spans[0].spans) == 410  # equal values of other types kept apart


def test_compact_records_are_encoded_as_the_sdk_encodes_the_spans_they_expand_to():
    through_pipe = orjson.loads(orjson.dumps([compact_record(extra=None)]))[0]  # lists for tuples, as it arrives
    records = [
        compact_record(extra=None),  # written straight from its places
        compact_record(),  # with extra attributes: through its expanded record
        compact_record(extra=None, route=None, outcome=None, status=0, others=None, queue=(0, 0, 0, 0)),
        compact_record(extra=None, validate=(0, 0), path="", request_id="é" * 200, status=503, others=[]),
        through_pipe,
        compact_record(extra=None, queue=(21, 30, 64, 3)),
        compact_record(extra=None, request_id="r-2"),  # fields made for the first ones, reused
        compact_record(extra=None, request_id=None, version=1),  # none; not a string: not kept, as
        compact_record(extra=None, version=True),  # 1 == True: a key of a dict kept for one would be the other's
        compact_record(extra=None, model=["a", "b"]),  # an array: no run kept for it
        compact_record(extra=None, model=["a", "b"]),
    ]
    found = Encoder(resource(), _Counting())
    spans = [span for record in records for span in found.spans(record)]
    ids = _Counting()
    expected = encode_spans([s for record in records for s in readable(expand(record), resource(), ids)])
    assert found.request(spans) == expected.SerializeToString()
    assert len(expected.resource_spans[0].scope_spans[0].spans) == 40  # 4 + 4 + 2 + 2 + 4 * 7


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_exporter_process_sends_otlp_as_the_otel_variables_configure_it(protocol):
    receiver_of = otlp_grpc_receiver if protocol == "grpc" else otlp_receiver
    with receiver_of() as receiver:
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=secret",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",  # only the flush sends
            "OTEL_SERVICE_NAME": "sent",
        }
        process = ExporterProcess(exporter_kinds(environ), environ)
        try:
            process.write([request_record()] * 3)
            process.flush(10.0)
            spans = receiver.wait_for(lambda got: len(got) == 9, timeout=10)
        finally:
            process.close()
    assert process.process.returncode == 0
    assert [s.name for s in spans] == ["POST /x", "validate", "batch"] * 3
    assert {s.service for s in spans} == {"sent"}
    assert receiver.headers[0]["x-api-key"] == "secret"
    if protocol != "grpc":
        assert receiver.headers[0]["content-encoding"] == "gzip"


def test_the_otlp_http_senders_session_reads_the_environment_once_as_requests_reads_it_per_request(
    monkeypatch, tmp_path
):
    url = "http://collector.example:4318/v1/traces"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector.example login user password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "bundle.pem"))
    for no_proxy, verify in [("", True), ("collector.example", True), ("", str(tmp_path / "collector.pem"))]:
        monkeypatch.setenv("NO_PROXY", no_proxy)
        trusting, settled = requests.Session(), requests.Session()
        trusting.verify = settled.verify = verify
        settle_environment(settled, url)
        assert settled.trust_env is False  # nothing read from the environment per request any more
        request = requests.Request("POST", url, data=b"spans")
        expected = trusting.merge_environment_settings(url, {}, None, None, None)
        found = settled.merge_environment_settings(url, {}, None, None, None)
        assert found["proxies"] == expected["proxies"] == ({} if no_proxy else {"http": "http://proxy.example:3128"})
        # the CA bundle of the environment where the exporter names no certificate; requests would let it
        # override the exporter's OTEL_EXPORTER_OTLP_CERTIFICATE too (psf/requests#3829): here that one stays
        assert found["verify"] == (expected["verify"] if verify is True else verify)
        sent_by, sent = trusting.prepare_request(request), settled.prepare_request(request)
        assert sent.headers["Authorization"] == sent_by.headers["Authorization"]  # the .netrc login
        assert requests.utils.resolve_proxies(sent, settled.proxies, False) == requests.utils.resolve_proxies(
            sent_by, trusting.proxies, True
        )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")
    (sender,) = senders(["otlp-http"])
    session = sender.exporter._client._transport._session  # type: ignore[attr-defined]
    assert (session.trust_env, session.proxies) == (False, {"http": "http://proxy.example:3128"})
    sender.close()


def test_the_exporter_process_pauses_its_reads_only_on_an_empty_pipe_and_less_when_frames_come_fast():
    read, write = os.pipe()
    try:
        pacer, paused = _Pacer(read), []
        pacer.sleep = paused.append
        pacer.wait()  # the first read: at once
        os.write(write, b"x")
        pacer.wait()  # a frame waiting: read at once
        assert paused == []
        os.read(read, 1)
        pacer.since, pacer.read = time.monotonic() - 1.0, 100  # 100 bytes a second: the longest pause
        pacer.wait()
        pacer.since, pacer.read = time.monotonic() - 1.0, pacer.room * 100  # a quarter of its pipe in 10 ms
        pacer.wait()
        assert paused[0] == LINGER_S and paused[1] == pytest.approx(0.01, rel=0.05)
        pacer.reset()  # after a flush: the next read at once
        pacer.wait()
        assert len(paused) == 2
    finally:
        os.close(read)
        os.close(write)


class _Timed:
    """A sender that notes the timeout of each send and fails when told to."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []
        self.failing = False

    def send(self, payload: Payload, timeout_s: float) -> bool:
        self.timeouts.append(timeout_s)
        return not self.failing

    def close(self) -> None:
        pass


def _batches(sender: _Timed, **environ: str) -> Batches:
    settings = {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3", **environ}
    return Batches(Encoder(resource(), RandomIdGenerator()), [sender], settings)


def test_each_export_is_bounded_by_otel_bsp_export_timeout_and_by_the_flush():
    sender = _Timed()
    batches = _batches(sender, OTEL_BSP_EXPORT_TIMEOUT="250")
    batches.write([request_record()])
    assert batches.flush(60.0) is True
    batches.write([request_record()])
    assert batches.flush(0.1) is True
    batches.close()
    assert sender.timeouts[0] == 0.25 and 0 < sender.timeouts[1] <= 0.1


def test_a_flush_stops_at_the_first_failed_export_and_keeps_the_rest_queued():
    sender = _Timed()
    batches = _batches(sender)
    batches.write([request_record()] * 2)  # two batches of 3 spans
    sender.failing = True
    assert batches.flush(60.0) is False
    assert len(sender.timeouts) == 1 and len(batches._queue) == 3
    assert sender.timeouts[0] == 30.0  # OTEL_BSP_EXPORT_TIMEOUT's default
    sender.failing = False
    assert batches.flush(60.0) is True
    batches.close()
    assert len(sender.timeouts) == 2


@contextmanager
def _silent_collector() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a collector that hangs)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_flush_to_a_collector_that_hangs_ends_within_otel_bsp_export_timeout(protocol, caplog):
    with _silent_collector() as endpoint:
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
            "OTEL_BSP_EXPORT_TIMEOUT": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000",  # only the flush sends
        }
        recorder = Recorder(ExporterProcess(exporter_kinds(environ), environ))
        try:
            recorder.append(request_record())
            started = time.monotonic()
            assert recorder.flush(20.0) is False
            elapsed = time.monotonic() - started
        finally:
            recorder.close()
    assert elapsed < 5.0, "the exporter process said it failed once its export ran out of time"
    assert "an export failed or ran out of time" in caplog.text


def test_a_flush_is_bounded_by_its_own_timeout_when_the_exporters_is_longer():
    with _silent_collector() as endpoint:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "30"}
        process = ExporterProcess(exporter_kinds(environ), environ)
        try:
            process.write([request_record()])
            started = time.monotonic()
            assert process.flush(1.0) is False
            assert time.monotonic() - started < 1.0 + FLUSH_MARGIN_S
        finally:
            process.close()
