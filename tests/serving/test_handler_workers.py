"""TorchServe handlers in worker processes (``workers: N``): real processes, real crashes, real restarts.

The archives are no-archive directories (``MAR-INF/MANIFEST.json`` + handler + ``model.py``) imported with
``modelport import-mar``; the server runs in-process and is asked over TorchServe's ``/predictions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelport.cli import main
from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ModelConfig, ServerSettings
from tests.serving.processes import wait_until

HANDLER = """
import ctypes
import os
import pathlib
import time

from model import VALUE  # the archive's own model.py: another archive has one too

INITS = pathlib.Path(os.environ["HANDLER_INITS"])


def handle(data, context):
    if data is None:
        if os.environ.get("HANDLER_INIT_FAILS"):
            raise RuntimeError("no weights here")
        with INITS.open("a") as log:
            log.write(f"{context.model_name} {os.getpid()}\\n")
        return None
    for row in data:
        value = row.get("data") or row.get("body")
        if value == b"segfault":
            ctypes.string_at(0)
        if value == b"exit":
            os._exit(3)
        if value == b"hang":
            time.sleep(600)
        if value.startswith(b"wait:"):  # until the test says go, so a request is in flight on this worker
            started, go = value[5:].decode().split(",")
            pathlib.Path(started).touch()
            while not pathlib.Path(go).exists():
                time.sleep(0.01)
    return [{"pid": os.getpid(), "value": VALUE, "batch": len(data)} for _ in data]
"""


def _add(repo: Path, tmp: Path, name: str, value: str, **config: Any) -> None:
    """Import a handler archive named ``name`` whose ``model.py`` says ``value``; ``config`` -> config.yaml."""
    source = tmp / f"{name}-archive"
    (source / "MAR-INF").mkdir(parents=True)
    manifest = {"model": {"modelName": name, "handler": "handler.py", "modelVersion": "1.0"}}
    (source / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (source / "handler.py").write_text(HANDLER)
    (source / "model.py").write_text(f"VALUE = {value!r}\n")
    batch = ["--max-batch-size", str(config["max_batch_size"])] if "max_batch_size" in config else []
    assert main(["import-mar", str(source), "--repository", str(repo), "--quiet", *batch]) == 0
    if config:
        (repo / name / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def inits(tmp_path, monkeypatch) -> Path:
    """The file every handler initialization appends ``model pid`` to (the workers inherit the variable)."""
    path = tmp_path / "inits.log"
    path.touch()
    monkeypatch.setenv("HANDLER_INITS", str(path))
    return path


@asynccontextmanager
async def _served(repo: Path) -> AsyncIterator[tuple[httpx.AsyncClient, DataPlane]]:
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client, plane
    finally:
        await plane.close()


def _worker_pids(plane: DataPlane, name: str) -> list[int]:
    execution = plane.manager.models[name].versions[1].execution
    assert execution is not None
    return [r.worker.pid for r in execution.runtimes]  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def _until(path: Path) -> None:
    """Wait for a file the handler creates (it is in another process: no event to share)."""
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)


async def test_workers_run_the_handler_in_processes_of_their_own(tmp_path, inits):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "proc", "one", workers=2)
    async with _served(repo) as (client, plane):
        pids = _worker_pids(plane, "proc")
        answers = await asyncio.gather(*(client.post("/predictions/proc", content=b"x") for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8, answers[0].text
    assert {a.json()["pid"] for a in answers} <= set(pids)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert sorted(int(line.split()[1]) for line in inits.read_text().splitlines()) == sorted(pids)


async def test_the_batcher_batches_requests_for_a_worker(tmp_path, inits):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "batched", "one", workers=1, max_queue_delay_ms=2000, max_batch_size=4)
    async with _served(repo) as (client, _):
        answers = await asyncio.gather(*(client.post("/predictions/batched", content=b"x") for _ in range(4)))
    assert [a.json()["batch"] for a in answers] == [4] * 4  # one handle() call in the worker for all four


@pytest.mark.parametrize("crash", [b"segfault", b"exit"])
async def test_a_crash_fails_only_its_request_and_the_worker_restarts(tmp_path, inits, crash):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "fragile", "one", workers=1)
    async with _served(repo) as (client, plane):
        [before] = _worker_pids(plane, "fragile")
        crashed = await client.post("/predictions/fragile", content=crash)
        after = await client.post("/predictions/fragile", content=b"fine")
        live = await client.get("/v2/health/live")
        metrics = (await client.get("/metrics")).text
        [restarted] = _worker_pids(plane, "fragile")
    assert crashed.status_code == 503, crashed.text
    assert crashed.json()["code"] == 503 and crashed.json()["type"] == "ServiceUnavailableException"
    assert after.status_code == 200 and after.json()["pid"] == restarted != before
    assert live.status_code == 200
    assert not _alive(before)
    assert len(inits.read_text().splitlines()) == 2  # initialize ran again in the new worker
    assert 'modelport_worker_restarts_total{model="fragile",version="1"} 1.0' in metrics


async def test_a_crash_leaves_the_other_workers_request_in_flight_untouched(tmp_path, inits):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "pair", "one", workers=2)
    started, go = tmp_path / "started", tmp_path / "go"
    async with _served(repo) as (client, _):
        waiting = asyncio.create_task(client.post("/predictions/pair", content=f"wait:{started},{go}".encode()))
        await _until(started)
        crashed = await client.post("/predictions/pair", content=b"exit")
        go.touch()
        survivor = await waiting
    assert crashed.status_code == 503, crashed.text
    assert survivor.status_code == 200, survivor.text


async def test_a_hanging_handler_times_out_and_its_worker_is_replaced(tmp_path, inits):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "sleepy", "one", workers=1, timeout_ms=1500)
    async with _served(repo) as (client, plane):
        [hung] = _worker_pids(plane, "sleepy")
        timed_out = await client.post("/v2/models/sleepy/infer", json=_v2(b"hang"))
        # the 504 comes when the request's time is up; the worker's restart may still run (slow on a busy
        # machine), and a request queued behind it would count that against its own 1.5 s: wait until the
        # replacement has initialized (its handler logged it to the inits file)
        deadline = time.monotonic() + 120
        while len(inits.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, "the worker was not replaced"
            await asyncio.sleep(0.05)
        after = await client.post("/predictions/sleepy", content=b"fine")
        [replacement] = _worker_pids(plane, "sleepy")
    assert timed_out.status_code == 504, timed_out.text
    assert "did not complete within 1.5s" in timed_out.json()["error"]
    assert after.status_code == 200 and after.json()["pid"] == replacement != hung
    assert not _alive(hung)


async def test_unload_and_shutdown_stop_every_worker(tmp_path, inits):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "first", "one", workers=2)
    _add(repo, tmp_path, "second", "two", workers=1)
    async with _served(repo) as (client, plane):
        first, second = _worker_pids(plane, "first"), _worker_pids(plane, "second")
        assert all(_alive(pid) for pid in first + second)
        await plane.unload("first")
        assert not any(_alive(pid) for pid in first)
        assert (await client.post("/predictions/second", content=b"x")).status_code == 200
    assert not any(_alive(pid) for pid in second)


@pytest.mark.parametrize("workers", [None, 1], ids=["in-process", "worker-processes"])
async def test_two_archives_with_a_model_py_each_get_their_own(tmp_path, inits, workers):
    repo = tmp_path / "repo"
    config = {"workers": workers} if workers else {}
    _add(repo, tmp_path, "left", "left value", **config)
    _add(repo, tmp_path, "right", "right value", **config)
    async with _served(repo) as (client, _):
        left = await client.post("/predictions/left", content=b"x")
        right = await client.post("/predictions/right", content=b"x")
    assert left.json()["value"] == "left value", left.text
    assert right.json()["value"] == "right value", right.text


async def test_workers_on_a_model_without_a_handler_leave_it_not_ready(tmp_path):
    from tests.serving.applications import add_colors

    repo = tmp_path / "repo"
    repo.mkdir()
    name = add_colors(repo)
    (repo / name / "config.yaml").write_text(yaml.safe_dump({"workers": 2}))
    async with _served(repo) as (client, _):
        ready = await client.get(f"/v2/models/{name}/ready")
    assert ready.status_code != 200
    assert "workers: runs TorchServe handlers in processes" in str(ready.json())


async def test_a_handler_that_cannot_initialize_in_its_worker_leaves_the_version_failed(tmp_path, inits, monkeypatch):
    repo = tmp_path / "repo"
    _add(repo, tmp_path, "broken", "one", workers=2)
    monkeypatch.setenv("HANDLER_INIT_FAILS", "1")
    async with _served(repo) as (client, _):
        ready = await client.get("/v2/models/broken/ready")
        live = await client.get("/v2/health/live")
    assert ready.status_code == 503 and live.status_code == 200
    assert ready.json()["reason"] == (
        "the handler could not initialize in its worker process: RuntimeError: no weights here"
    )


def test_workers_and_instances_do_not_go_together():
    with pytest.raises(ValueError, match="drop instances"):
        ModelConfig.model_validate({"workers": 2, "instances": 2})


def _v2(payload: bytes) -> dict[str, Any]:
    return {"inputs": [{"name": "data", "datatype": "BYTES", "shape": [1], "data": [payload.decode()]}]}


def _initialized(inits: Path, count: int) -> list[int]:
    pids = [int(line.split()[1]) for line in inits.read_text().splitlines()]
    assert len(pids) == count, pids
    return pids


@pytest.mark.slow
def test_a_real_server_survives_a_segfault_and_stops_its_workers(tmp_path, inits):
    import psutil

    from modelport.launcher import LaunchOptions, launched

    repo = tmp_path / "repo"
    _add(repo, tmp_path, "real", "one", workers=2)
    options = LaunchOptions(grpc_port=-1, log=tmp_path / "server.log", timeout_s=120)
    with launched(repo, options=options) as server:
        first = _initialized(inits, 2)
        assert {p.pid for p in psutil.Process(server.process.pid).children()} >= set(first)
        crashed = httpx.post(f"{server.url}/predictions/real", content=b"segfault", timeout=60)
        after = [httpx.post(f"{server.url}/predictions/real", content=b"x", timeout=60) for _ in range(4)]
        workers = _initialized(inits, 3)
        assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert server.process.returncode == 0
    assert crashed.status_code == 503 and crashed.json()["type"] == "ServiceUnavailableException", crashed.text
    assert [a.status_code for a in after] == [200] * 4
    assert 'modelport_worker_restarts_total{model="real",version="1"} 1.0' in metrics
    assert not [pid for pid in workers if psutil.pid_exists(pid)], "a worker outlived the server"


def _post_ignoring_errors(url: str, body: bytes) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server dies while it waits
        httpx.post(url, content=body, timeout=60)


@pytest.mark.slow
def test_workers_exit_when_the_server_is_killed(tmp_path, inits):
    import psutil

    from modelport.launcher import LaunchOptions, launched

    repo = tmp_path / "repo"
    _add(repo, tmp_path, "orphan", "one", workers=2)
    started, never = tmp_path / "started", tmp_path / "never"
    with launched(repo, options=LaunchOptions(grpc_port=-1, log=tmp_path / "server.log", timeout_s=120)) as server:
        workers = [psutil.Process(pid) for pid in _initialized(inits, 2)]
        body = f"wait:{started},{never}".encode()
        busy = threading.Thread(target=_post_ignoring_errors, args=(f"{server.url}/predictions/orphan", body))
        busy.start()
        # one worker is mid-batch: it never reads its pipe again
        wait_until(started.exists, 60, "a worker mid-batch")
        server.process.kill()  # no unload, no atexit: only the lifeline pipe tells the workers
        server.process.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        busy.join(60)
    assert not alive, f"orphaned workers: {alive}"


@pytest.mark.torchserve
def test_a_crashing_handler_recovers_as_in_torchserve(tmp_path, inits):
    """The same archive in TorchServe 0.12 and in modelport (workers: 1): the crash is a 5xx in TorchServe's
    error body, the next request is answered by a new worker process. TorchServe says 500 "Worker died.";
    modelport says 503 (retryable, with Retry-After), as issue 15 asks."""
    import subprocess
    import sys

    from modelport.launcher import LaunchOptions, launched
    from modelport.torchserve_process import running_torchserve

    source = tmp_path / "crashy-src"
    source.mkdir()
    (source / "handler.py").write_text(HANDLER)
    (source / "model.py").write_text("VALUE = 'one'\n")
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [str(archiver), "--model-name", "crashy", "--version", "1.0", "--export-path", str(tmp_path)]
    command += ["--serialized-file", str(source / "model.py"), "--handler", str(source / "handler.py")]
    subprocess.run([*command, "--extra-files", str(source / "model.py"), "--force"], check=True, capture_output=True)
    mar = tmp_path / "crashy.mar"
    assert main(["import-mar", str(mar), "--repository", str(tmp_path / "repo"), "--quiet"]) == 0
    (tmp_path / "repo" / "crashy" / "config.yaml").write_text(yaml.safe_dump({"workers": 1}))

    def crash_and_recover(url: str) -> tuple[httpx.Response, list[httpx.Response]]:
        before = httpx.post(f"{url}/predictions/crashy", content=b"x", timeout=60)
        crashed = httpx.post(f"{url}/predictions/crashy", content=b"exit", timeout=60)
        return crashed, [before, httpx.post(f"{url}/predictions/crashy", content=b"x", timeout=60)]

    with running_torchserve(mar, tmp_path / "ts") as ts:
        theirs, their_answers = crash_and_recover(ts.inference)
    with launched(tmp_path / "repo", options=LaunchOptions(grpc_port=-1, log=tmp_path / "server.log")) as server:
        mine, my_answers = crash_and_recover(server.url)
    assert theirs.status_code == 500 and theirs.json() == {
        "code": 500,
        "type": "InternalServerException",
        "message": "Worker died.",
    }
    assert mine.status_code == 503 and mine.json()["type"] == "ServiceUnavailableException", mine.text
    assert mine.json().keys() == theirs.json().keys() and mine.json()["code"] == 503
    for before, after in (their_answers, my_answers):
        assert before.status_code == after.status_code == 200
        assert before.json()["pid"] != after.json()["pid"]  # a new worker process answered


RELATIVE_HANDLER = """
import os


def handle(data, context):
    if data is None:
        return None
    with open("labels.txt") as file:  # a relative path: TorchServe's worker runs in the model directory
        labels = file.read().split()
    return [{"labels": labels, "cwd": os.getcwd()} for _ in data]
"""


async def test_a_worker_runs_in_the_model_directory_as_torchserve_runs_its_workers(tmp_path):
    source = tmp_path / "relative-archive"
    (source / "MAR-INF").mkdir(parents=True)
    manifest = {"model": {"modelName": "relative", "handler": "handler.py", "modelVersion": "1.0"}}
    (source / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (source / "handler.py").write_text(RELATIVE_HANDLER)
    (source / "labels.txt").write_text("cat dog\n")
    repo = tmp_path / "repo"
    assert main(["import-mar", str(source), "--repository", str(repo), "--quiet"]) == 0
    config = yaml.safe_load((repo / "relative" / "config.yaml").read_text())
    (repo / "relative" / "config.yaml").write_text(yaml.safe_dump({**config, "workers": 1}))
    here = os.getcwd()
    async with _served(repo) as (client, _):
        answer = await client.post("/predictions/relative/1.0", content=b"x")  # the archive's version, too
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"labels": ["cat", "dog"], "cwd": str((repo / "relative" / "1").resolve())}
    assert os.getcwd() == here  # the server's own directory is untouched
