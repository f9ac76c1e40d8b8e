"""A repository served in this process (the HTTP port's ASGI app, or the gRPC server, over a started data plane),
for tests that need a model's answers without a server process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_v2 import build_grpc_server
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes


@asynccontextmanager
async def served_in_process(repository: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``repository`` served with ``settings`` (ServerSettings fields); the plane is closed after."""
    plane = build(ServerSettings(repository=repository, **settings))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await plane.close()


@asynccontextmanager
async def grpc_served_in_process(repository: Path) -> AsyncIterator[tuple[DataPlane, str]]:
    """A data plane whose batches never run on the event loop (``fakes.GATE`` may hold echo) and the address of
    its gRPC server; after, the gate is opened, the server stopped and the plane closed."""
    plane = build(ServerSettings(repository=repository, max_queue_delay_ms=0, inline_below_ms=0))
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
