"""A repository served in this process (the HTTP port's ASGI app over a started data plane), for tests that need
a model's answers without a server process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings


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
