"""Memory: what a request holds while it waits for its batch; freed heap pages go back to the OS; the ONNX arena."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

import modelport
from modelport.errors import InvalidArgumentError
from modelport.runtimes.base import OnnxArena, RuntimeOptions
from modelport.runtimes.onnx import session_options
from modelport.serving.dataplane import DataPlane
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings, read_model_config
from modelport.serving.v2 import InferRequest
from tests.serving import embedding, fakes
from tests.serving.processes import until

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
        await until(lambda: bool(batcher.in_flight), what="a running batch")


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


_FRAGMENTED_HEAP = """
import sys
from pathlib import Path
from modelport.serving.memory import release_freed_memory

def rss_mb():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

blocks = [bytearray(b"x" * 100_000) for _ in range(1000)]  # below the mmap threshold: on the heap
last = blocks[-1]  # pins the top of the heap, so free() alone cannot give anything back
del blocks
freed = rss_mb()
released = release_freed_memory()
print(released, freed, rss_mb())
"""


def test_release_freed_memory_hands_freed_heap_pages_back() -> None:
    """What a load freed but the C heap kept (its top still in use) leaves the process (glibc)."""
    done = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    released, freed, after = done.stdout.split()
    assert released == "True"
    assert float(after) < float(freed) - 60, done.stdout  # ~95 MB freed by Python, held by malloc until trimmed


def _env_allocators(options: Any) -> bool:
    try:
        return bool(options.get_session_config_entry("session.use_env_allocators") == "1")
    except RuntimeError:  # onnxruntime: no such entry
        return False


@pytest.mark.parametrize(
    ("arena", "cpu_arena", "shared"),
    [("shared", True, True), ("session", True, False), ("none", False, False)],
)
def test_onnx_arena_choices_set_up_the_session(arena: OnnxArena, cpu_arena: bool, shared: bool) -> None:
    """shared: the process's arena (registered once, used by every session that asks); session: onnxruntime's own."""
    import onnxruntime as ort

    options = session_options(ort, RuntimeOptions(intra_op_threads=1, onnx_arena=arena))
    assert (options.enable_cpu_mem_arena, _env_allocators(options)) == (cpu_arena, shared)
    assert options.intra_op_num_threads == 1


@pytest.mark.parametrize("default", ["session", "shared"])
async def test_the_server_default_and_config_yaml_choose_each_model_s_onnx_arena(
    tmp_path: Path, default: OnnxArena
) -> None:
    """--onnx-arena is the default (onnxruntime's own unless told); a model's config.yaml onnx_arena overrides it;
    every choice answers alike."""
    repo = tmp_path / "repo"
    names = {arena: embedding.export(repo, f"emb-{arena}") for arena in ("shared", "session", "none")}
    for arena in {"shared", "session", "none"} - {default}:
        (repo / names[arena] / "config.yaml").write_text(f"onnx_arena: {arena}\n")
    assert ServerSettings(repository=repo).onnx_arena == "session"
    plane = build(ServerSettings(repository=repo, grpc_port=-1, onnx_arena=default))
    await plane.start()
    try:
        ids = np.array([[1, 2, 3]], dtype=np.int64)
        for arena, name in names.items():
            execution = plane.manager.get(name).execution
            assert execution is not None
            runtime = execution.runtimes[0]
            session = runtime.session  # type: ignore[attr-defined]
            assert runtime.options.onnx_arena == arena  # type: ignore[attr-defined]
            assert _env_allocators(session.get_session_options()) == (arena == "shared")
            response = await plane.infer(name, None, InferRequest(inputs={"ids": ids}), "v2")
            assert np.array_equal(response.outputs["emb"], embedding.table()[ids])
    finally:
        await plane.close()


def test_an_unknown_onnx_arena_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        ServerSettings(repository=tmp_path, onnx_arena="pooled")  # type: ignore[arg-type]
    (tmp_path / "config.yaml").write_text("onnx_arena: pooled\n")
    with pytest.raises(InvalidArgumentError, match="onnx_arena"):
        read_model_config(tmp_path)


def test_a_loaded_server_freezes_its_heap_and_collects_young_cycles_every_ten_thousand_allocations() -> None:
    script = """
import gc, weakref
from modelport.serving.memory import GC_YOUNG, settle_heap
settle_heap()
assert gc.get_threshold()[0] == GC_YOUNG == 10_000, gc.get_threshold()
assert gc.get_freeze_count() > 0
class Node:
    pass
first = Node(); first.self = first; alive = weakref.ref(first); del first
for _ in range(3 * GC_YOUNG):  # cycles keep coming: each young collection frees the ones before it
    node = Node(); node.self = node
assert alive() is None, "a young collection has freed the first cycle"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
