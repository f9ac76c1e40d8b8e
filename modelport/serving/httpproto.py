"""The HTTP port's protocol: uvicorn's httptools protocol, answering the inference routes without ASGI.

:class:`FastHttpProtocol` is what uvicorn runs on each connection (``uvicorn.Config(http=...)``). It keeps all
of uvicorn's connection handling (keep-alive timeout, flow control, pipelining, graceful shutdown, the
server state's connections, tasks and request count, ``limit_concurrency``, the ``server``/``date``
headers) and, for one kind of request, skips the ASGI machinery: a request for an inference route of the
:class:`~modelport.serving.front.HttpFront` (v2 infer, TF Serving ``:predict``, TorchServe predictions)
that is simple -- its body, if any, sized by ``Content-Length``; no ``Expect``, ``Upgrade`` or
``Transfer-Encoding`` -- is answered by an :class:`_Exchange`: no ASGI scope, no ``RequestResponseCycle``
(its event, ``receive`` and ``send`` messages, per-header checks), the body gathered from the parser's
callbacks, and the whole response written in one ``transport.write``. The front's own code answers it
(``HttpFront.reply``: authentication, handler, errors), with the same request id and tracing hooks, so a
client sees the same bytes either way. Everything else (other routes, chunked bodies, ``100-continue``,
upgrades, a wrapped app, requests over ``limit_concurrency``) goes through uvicorn's ASGI path unchanged.

Why: for a small model, uvicorn's ASGI cycle (two writes, an event and the scope per request) cost about
as much of the event loop as the data plane's own work (``benchmarks/http_protocol_bound.py``).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any

import httptools
import uvicorn
from mypy_extensions import mypyc_attr
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelport.serving import tracing
from modelport.serving.front import (
    CLIENT_CLOSED_STATUS,
    DisconnectedError,
    HotRequest,
    HttpFront,
    check_declared_length,
    reply_headers,
)
from modelport.serving.httperrors import Reply
from modelport.serving.requestid import REQUEST_ID, request_id_of

__all__ = ["TESTED_UVICORN", "FastHttpProtocol", "http_protocol"]

log = logging.getLogger("modelport.serving.http")

# FastHttpProtocol stands inside uvicorn's protocol (its cycle, pipeline and ``_start_asgi_task``): these are
# the uvicorn releases it is tested with (constraints.txt pins one). With any other, the server runs uvicorn's
# own protocol, every request through ASGI: the same answers, without the saving.
TESTED_UVICORN = ("0.54.",)


def http_protocol(fast_path: bool) -> type[asyncio.Protocol] | str:
    """What ``uvicorn.Config(http=...)`` gets: the fast protocol when asked for and this uvicorn is a tested one."""
    if not fast_path:
        return "httptools"
    if not uvicorn.__version__.startswith(TESTED_UVICORN):
        log.warning(
            "uvicorn %s is not a release the HTTP fast path is tested with (%s): every request goes through ASGI",
            uvicorn.__version__,
            ", ".join(f"{v}x" for v in TESTED_UVICORN),
        )
        return "httptools"
    return FastHttpProtocol


_NOT_SIMPLE = frozenset({b"expect", b"upgrade", b"transfer-encoding"})
_CLOSE = (b"connection", b"close")


class FastHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the HttpFront's simple inference requests answered by an
    :class:`_Exchange`, which stands where uvicorn's cycle would (``self.cycle``, the pipeline)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the app uvicorn runs is the front unless uvicorn wrapped it (trace logging): then all goes through ASGI
        self.front = self.app if isinstance(self.app, HttpFront) else None
        self.idle_since: float | None = None  # when its last response ended, no request since (keep-alive)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, but for the keep-alive timer: a request no longer cancels it (see :meth:`_keep_alive_due`)."""
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive timer is armed only when none is: uvicorn cancels it on every request
        and makes a new one after every response (a timer made and cancelled per request on a busy connection);
        this one, when it fires, closes the connection only if it has been idle for the whole timeout."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        """The keep-alive timer: the connection is closed once idle for ``timeout_keep_alive`` since its last
        response; not while a request is in (the next response arms the timer again)."""
        self.timeout_keep_alive_task = None
        idle_since = self.idle_since
        if idle_since is None:
            return
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []  # the ASGI scope is made only for a request that goes through ASGI

    def on_headers_complete(self) -> None:
        front = self.front
        request = None if front is None else self._hot_request(front)
        if front is None or request is None:
            self._make_scope()
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = _Exchange(self, front, request, keep_alive)
        existing, self.cycle = self.cycle, exchange  # type: ignore[assignment]  # it stands in for a cycle
        if existing is None or existing.response_complete:
            self._start_asgi_task(exchange, self.app)
        else:  # pipelined behind a request not yet answered: uvicorn's queue starts it in turn
            self.flow.pause_reading()
            self.pipeline.appendleft((exchange, self.app))  # type: ignore[arg-type]

    def _hot_request(self, front: HttpFront) -> HotRequest | None:
        """The request as a :class:`HotRequest` when an exchange may answer it, else None."""
        if self.parser.should_upgrade():
            return None
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            return None  # uvicorn's ASGI path answers the 503
        if any(name in _NOT_SIMPLE for name, _ in self.headers):
            return None
        path = httptools.parse_url(self.url).path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        path = self.root_path + path
        method = self.parser.get_method().decode("ascii")
        hot = front.hot(method, path)
        client = self.client[0] if self.client else None
        return None if hot is None else HotRequest(hot[0], hot[1], method, path, self.headers, client)

    def _make_scope(self) -> None:
        """The ASGI scope uvicorn makes when a message begins, over this request's URL and headers."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if not isinstance(cycle, _Exchange):
            super()._start_asgi_task(cycle, app)
            return
        task = cycle.task = self.loop.create_task(cycle.answer())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        if isinstance(self.cycle, _Exchange):
            self.cycle.received(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if isinstance(self.cycle, _Exchange):
            self.cycle.completed()
        else:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.cycle, _Exchange):
            self.cycle.lost()
            self.cycle = None  # type: ignore[assignment]  # what uvicorn does on a lost connection is for its own cycle
        super().connection_lost(exc)


@mypyc_attr(native_class=False)  # compiled (serving/native.py), still a Python class: tests spy on its methods
class _Exchange:
    """One simple inference request on a :class:`FastHttpProtocol` connection: its body as the parser delivers
    it, then the front's reply written whole. ``response_complete``, ``keep_alive`` and ``disconnected`` are the
    state uvicorn's connection handling reads and sets on a cycle (pipelining, shutdown). A connection lost once
    the body is in cancels ``task``, the answer: a request waiting for its batch leaves it."""

    __slots__ = (
        "chunks",
        "disconnected",
        "front",
        "keep_alive",
        "more_body",
        "protocol",
        "request",
        "response_complete",
        "size",
        "task",
        "waiter",
    )

    def __init__(self, protocol: FastHttpProtocol, front: HttpFront, request: HotRequest, keep_alive: bool) -> None:
        self.protocol, self.front, self.request, self.keep_alive = protocol, front, request, keep_alive
        self.response_complete = self.disconnected = False
        self.more_body = True
        self.chunks: list[bytes] = []
        self.size = 0
        self.waiter: asyncio.Future[None] | None = None  # the handler, waiting for the rest of the body
        self.task: asyncio.Task[None] | None = None  # answer(), once started

    def received(self, chunk: bytes) -> None:
        """A piece of the body (parser callback); ignored once answered (the rest of the body is skipped)."""
        if self.response_complete:
            return
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.waiter is None and self.size > HIGH_WATER_LIMIT:
            self.protocol.flow.pause_reading()  # as uvicorn does: buffer no more until the handler reads

    def completed(self) -> None:
        """The whole body is in (parser callback)."""
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        """The connection closed: a handler reading the body stops (DisconnectedError), one past it is cancelled."""
        if not self.response_complete:
            self.disconnected = True
            if self.waiter is None and self.task is not None:
                self.task.cancel()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self, limit: int) -> bytes:
        """The body (a :data:`~modelport.serving.front.BodyReader`): refused (413) by its ``Content-Length``
        before any of it is read; httptools delivers exactly that many bytes."""
        check_declared_length(self.request.headers, limit)
        while self.more_body and not self.disconnected:
            self.protocol.flow.resume_reading()
            self.waiter = self.protocol.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.disconnected:
            raise DisconnectedError
        chunks, self.chunks = self.chunks, []  # not held while the request waits for its batch
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def answer(self) -> None:
        """Answer the request (its task): the front's reply, under the request's id and tracing span. Both are set
        in the task's own context and left there: it ends with the task (no reset to pay for)."""
        request = self.request
        request_id = request_id_of(request.headers)
        REQUEST_ID.set(request_id)
        stamp = (b"x-request-id", request_id.encode())
        traced = None
        try:
            if tracing.ENABLED:  # the reply is written whole
                traced = tracing.http_exchange(request.method, request.path, request.headers)
            reply = await self.front.reply(request, self.read)
            if reply is None:
                return
            headers = reply_headers(reply, stamp)
            if traced is not None:  # the span's traceparent header
                headers += traced.answered(reply.status)
            if reply.stream is not None:
                await self.write_streamed(reply, headers)
                return
            await self.write(reply.status, headers, reply.body)
        except asyncio.CancelledError:
            if traced is not None and self.disconnected:  # lost(): nobody to answer
                traced.answered(CLIENT_CLOSED_STATUS)
            raise
        except Exception:  # as uvicorn does for an app that fails: log it and drop the connection
            log.exception("exception while answering an inference request")
            self.protocol.transport.close()
        finally:
            if traced is not None:
                traced.finish()

    async def write_streamed(self, reply: Reply, headers: list[tuple[bytes, bytes]]) -> None:
        """A reply whose bodies come one after another (a streaming TorchServe handler's): chunked on a connection
        kept alive, else written as they come and ended by closing the connection (HTTP/1.0); a failure after the
        first body cuts the response short (the connection is closed without the last chunk)."""
        assert reply.stream is not None
        protocol = self.protocol
        chunked = self.keep_alive
        framing = (b"transfer-encoding", b"chunked") if chunked else _CLOSE
        content = [STATUS_LINE[reply.status]]
        for name, value in (*protocol.server_state.default_headers, *headers, framing):
            if name != b"content-length":
                content += (name, b": ", value, b"\r\n")
        content += (b"\r\n", _chunk(reply.body, chunked))
        protocol.transport.write(b"".join(content))
        try:
            async for body in reply.stream:
                if self.disconnected or protocol.transport.is_closing():
                    break  # nobody to send the rest to: leaving the stream cancels the request
                if protocol.flow.write_paused:
                    await protocol.flow.drain()
                protocol.transport.write(_chunk(body, chunked))
        except Exception as exc:
            log.warning("the handler failed after it streamed part of its answer (%s): response cut short", exc)
            protocol.transport.close()
            return
        finally:
            await reply.stream.aclose()  # type: ignore[attr-defined]  # an async generator
        if chunked and not protocol.transport.is_closing():
            protocol.transport.write(b"0\r\n\r\n")
        self.response_complete = True
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()

    async def write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The response in one write, as uvicorn's ``send`` would put it; the connection closed after it when the
        request or the reply says so. The headers are the front's own (no per-header checks)."""
        protocol = self.protocol
        if protocol.flow.write_paused and not self.disconnected:
            await protocol.flow.drain()
        if self.disconnected or protocol.transport.is_closing():
            return
        content = [STATUS_LINE[status]]
        for name, value in (*protocol.server_state.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        if _CLOSE in headers:
            self.keep_alive = False
        elif not self.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        protocol.transport.write(b"".join(content))
        self.response_complete = True
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


def _chunk(body: bytes, chunked: bool) -> bytes:
    """One body as HTTP/1.1 chunked encoding writes it (nothing for an empty one: that would end the response)."""
    if not chunked or not body:
        return body
    return b"%x\r\n%s\r\n" % (len(body), body)
