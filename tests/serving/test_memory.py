"""Memory: what a request holds while it waits for its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import modelport
from modelport.serving.dataplane import DataPlane
from tests.serving import fakes

ROWS = [[float(i), i + 0.5, i + 0.25] for i in range(8)]
V2 = {"inputs": [{"name": "x", "shape": [8, 3], "datatype": "FP32", "data": ROWS}]}


PACKAGE = str(Path(modelport.__file__).parent)


def _server_locals(task: asyncio.Task[Any]) -> Iterator[dict[str, Any]]:
    """The locals of every modelport coroutine frame a task is suspended in (the client's own are not looked at)."""
    awaiting: Any = task.get_coro()
    while awaiting is not None:
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "ag_frame", None)
        if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
            yield frame.f_locals
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "ag_await", None)


async def _until_running(plane: DataPlane) -> None:
    batcher = plane.manager.get("echo").batcher
    assert batcher is not None
    async with asyncio.timeout(10):
        while not batcher.in_flight:
            await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v2/models/echo/infer", V2),
        ("/v1/models/echo:predict", {"instances": ROWS}),
        ("/predictions/echo", ROWS),
    ],
    ids=["v2-json", "tfserving", "torchserve"],
)
async def test_a_waiting_request_no_longer_holds_its_json_body(
    client: httpx.AsyncClient, plane: DataPlane, path: str, payload: Any
) -> None:
    """Decoded into tensors, a JSON body (text several times their size) is freed, not kept until the batch ran."""
    body = orjson.dumps(payload)
    fakes.GATE.clear()  # the batch blocks in the runtime: the request waits
    request = asyncio.create_task(client.post(path, content=body, headers={"Content-Type": "application/json"}))
    try:
        await _until_running(plane)
        held = [
            name
            for task in asyncio.all_tasks()
            for frame in _server_locals(task)
            for name, value in frame.items()
            if isinstance(value, bytes) and value == body
        ]
        assert held == []
    finally:
        fakes.GATE.set()
    response = await request
    assert response.status_code == 200, response.text
