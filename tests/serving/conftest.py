"""Serving fixtures: an in-process app over a fake repository."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    fakes.write_model(root, "echo", config={"version_policy": {"all": True}})
    fakes.write_model(root, "echo", version=2)
    fakes.write_model(root, "ints", dtype="int32")
    fakes.write_model(root, "wrong", runtime="WrongRuntime")
    fakes.write_model(root, "failing", runtime="FailingRuntime")
    fakes.write_model(root, "broken", runtime="BrokenLoadRuntime")
    fakes.BATCH_LOG.clear()
    fakes.GATE.set()
    return root


@pytest.fixture
async def plane(repo: Path) -> AsyncIterator[DataPlane]:
    data_plane = build(ServerSettings(repository=repo, model_control=True, max_queue_delay_ms=0))
    await data_plane.start()
    yield data_plane
    fakes.GATE.set()
    await data_plane.close()


@pytest.fixture
async def client(plane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
