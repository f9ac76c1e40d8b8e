"""Run the server: HTTP (uvicorn) over the data plane, repository loading, hot reload, graceful drain."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvicorn

from modelport.errors import ModelportError, UnavailableError
from modelport.launcher import write_port_file
from modelport.serving import logsettings, tracing
from modelport.serving.dataplane import DataPlane
from modelport.serving.httpproto import http_protocol
from modelport.serving.memory import settle_heap
from modelport.serving.metrics import Metrics
from modelport.serving.requestid import RequestIdFilter
from modelport.serving.rest import create_app
from modelport.serving.settings import ServerSettings
from modelport.serving.tls import check_tls, grpc_credentials, uvicorn_ssl
from modelport.storage import RedactSecrets

__all__ = ["build", "configure_logging", "serve"]

log = logging.getLogger("modelport.server")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "-")
        if trace_id != "-":  # only with tracing on, inside a request's span
            data["trace_id"] = trace_id
        if record.exc_info:
            data["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(settings: ServerSettings) -> None:
    """Plain or JSON logs on stderr at the configured level, credentials redacted; with tracing, each record's
    trace id too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    handler.addFilter(RequestIdFilter())
    ids = "%(request_id)s"
    if tracing.wanted(settings):
        handler.addFilter(tracing.TraceIdFilter())
        ids += " %(trace_id)s"
    handler.setFormatter(
        _JsonFormatter()
        if settings.log_json
        else logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{ids}]: %(message)s")
    )
    handler.addFilter(logsettings.FILTER)  # Triton's logging extension switches severities on and off here
    logsettings.FILTER.start(logging.getLevelName(settings.log_level.upper()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def build(settings: ServerSettings) -> DataPlane:
    """The data plane over ``settings.repository``, with its own metrics (not yet started)."""
    return DataPlane(settings, Metrics())


def serve(settings: ServerSettings) -> int:
    """Serve until SIGTERM/SIGINT, then drain and exit 0 (``--workers N``: N supervised processes)."""
    configure_logging(settings)
    check_tls(settings)  # before any worker starts: one clear error, not one traceback per worker
    if settings.workers > 1:
        from modelport.serving.workers import run_workers

        return run_workers(settings)
    from modelport.serving.workers import with_inherited_secrets

    tracing.configure(settings)
    try:
        return _run(_serve(with_inherited_secrets(settings)))
    finally:
        tracing.shutdown()  # the spans still queued are exported before the process exits


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(settings: ServerSettings) -> int:
    tracing.attach(asyncio.get_running_loop())  # its spans shipped from this loop, not a thread of their own
    try:
        return await _serving(settings)
    finally:
        tracing.detach()


async def _serving(settings: ServerSettings) -> int:
    plane = build(settings)
    # A lone server listens while it loads, so liveness answers and readiness says "not yet". A worker
    # of --workers binds its port at once (a busy port is still a clear error) but listens only once
    # loaded: the kernel hands connections to listening sockets only, so no request reaches a worker
    # that has no models yet, and the supervisor's port file (written when every worker wrote its
    # own) means every worker is serving.
    sock = _bind(settings.host, settings.http_port, "--http-port; 0 = any free port", settings.reuse_port)
    if settings.reuse_port:
        await _load(settings, plane)
    server = uvicorn.Server(_uvicorn_config(settings, plane))
    task = asyncio.create_task(server.serve(sockets=[_listen(sock)]))
    while not server.started:
        if task.done():
            return 1
        await asyncio.sleep(0.01)
    try:
        grpc = await _start_grpc(settings, plane)
    except ModelportError:
        server.should_exit = True
        await task
        raise
    _install_drain(server, plane)
    port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.http_port
    log.info("HTTP listening on %s://%s:%s", "https" if settings.tls_certfile else "http", settings.host, port)
    if settings.port_file:
        write_port_file(Path(settings.port_file), {"http": port, "grpc": grpc[2] if grpc else None})
    if not settings.reuse_port:
        await _load(settings, plane)
    background = [asyncio.create_task(_refresh_health(plane, grpc))] if grpc else []
    if settings.poll_interval_s > 0:
        background.append(asyncio.create_task(plane.watch_repository()))
    await task
    for job in background:
        job.cancel()
    if grpc is not None:
        await grpc[0].stop(grace=5)
    await plane.close()
    if settings.port_file:
        Path(settings.port_file).unlink(missing_ok=True)
    log.info("stopped")
    return 0


def _uvicorn_config(settings: ServerSettings, plane: DataPlane) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(plane),
        http=http_protocol(settings.http_fast_path),
        host=settings.host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,  # nothing reads scope["client"]: its middleware was one more await per request
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        **uvicorn_ssl(settings),
    )


async def _start_grpc(settings: ServerSettings, plane: DataPlane) -> tuple[Any, Any, int] | None:
    """The KServe v2 gRPC server on ``grpc_port`` (-1: none), same process and data plane: server, health, port."""
    if settings.grpc_port < 0:
        return None
    from modelport.serving.grpc_v2 import build_grpc_server

    if not settings.reuse_port:
        _bind(settings.host, settings.grpc_port, "--grpc-port; -1 = no gRPC").close()  # grpc's own error is a log line
    server, health = build_grpc_server(plane)
    address, credentials = f"{settings.host}:{settings.grpc_port}", grpc_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    log.info("gRPC listening on %s:%s%s", settings.host, port, " (TLS)" if credentials else "")
    return server, health, port


async def _load(settings: ServerSettings, plane: DataPlane) -> None:
    started = time.perf_counter()
    await plane.start()
    settle_heap()
    log.info(
        "repository %s loaded in %.2fs: %s",
        settings.repository,
        time.perf_counter() - started,
        ", ".join(f"{r.name}/{r.version or '-'}={r.state}" for r in plane.repository_index()) or "empty",
    )


async def _refresh_health(plane: DataPlane, grpc: tuple[Any, Any, int]) -> None:
    """Keep grpc.health.v1 in step with readiness (server and per model), once a second."""
    from modelport.serving.grpc_v2 import publish_health

    while True:
        await publish_health(plane, grpc[1])
        await asyncio.sleep(0.2 if plane.draining else 1.0)


def _listen(sock: socket.socket) -> socket.socket:
    """The HTTP socket, bound by the caller so that a busy port is one clear error, now listening."""
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _bind(host: str, port: int, hint: str, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``host:port``; a port in use (or not allowed) is an UnavailableError naming the flag."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror} ({hint})") from exc
    return sock


def _install_drain(server: uvicorn.Server, plane: DataPlane) -> None:
    """SIGTERM/SIGINT: readiness goes false, new requests get 503, in-flight ones finish, then exit.
    A second signal exits at once."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    def start_drain() -> None:
        if tasks:
            server.force_exit = True
            return
        log.info("draining: readiness is now false")
        tasks.append(loop.create_task(_drain(server, plane)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, start_drain)


async def _drain(server: uvicorn.Server, plane: DataPlane) -> None:
    still_running = await plane.drain()
    if still_running:
        log.warning("drain timeout: %d request(s) still in flight", still_running)
    server.should_exit = True
