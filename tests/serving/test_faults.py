"""Faults against real servers: broken models, raising and slow models, hot reload and SIGTERM under load.

Each test counts outcomes of real concurrent requests; nothing may be lost, hang or crash the server.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelport.golden import load_golden, save_golden
from modelport.manifest import file_sha256, read_manifest, write_manifest
from tests.serving import fakes
from tests.serving.processes import serving, wait_until

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def _body(data: Any = X) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": data}]}


def _post(url: str, model: str, data: Any = X, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=_body(data), timeout=timeout)


def _ready(url: str, model: str) -> httpx.Response:
    return httpx.get(f"{url}/v2/models/{model}/ready", timeout=5)


@pytest.mark.torch
def test_corrupt_or_drifted_models_are_not_ready_and_say_why_while_others_serve(tmp_path: Path, digits_repo: Any):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    corrupt, drifted = repo / "corrupt" / "1", repo / "drifted" / "1"
    shutil.copytree(digits_repo.root / "digits-onnx" / "1", corrupt)
    shutil.copytree(digits_repo.root / "digits-onnx" / "1", drifted)
    model = corrupt / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    cases = load_golden(drifted / "golden.npz")
    for case in cases:  # the model no longer reproduces what its source computed
        for name in case.outputs:
            case.outputs[name] = case.outputs[name] + 1.0
    save_golden(drifted / "golden.npz", cases)
    manifest = read_manifest(drifted)  # consistent files (their checksums pass): only the golden check can tell
    write_manifest(
        manifest.model_copy(update={"files": {**manifest.files, "golden.npz": file_sha256(drifted / "golden.npz")}}),
        drifted,
    )
    with serving(repo) as server:
        assert _post(server.url, "echo").status_code == 200
        broken = _ready(server.url, "corrupt")
        assert broken.status_code == 503
        assert "'model.onnx' does not match its manifest" in broken.json()["reason"]
        wrong = _ready(server.url, "drifted")
        assert wrong.status_code == 503
        assert "golden check failed" in wrong.json()["reason"]
        for name in ("corrupt", "drifted"):
            assert _post(server.url, name).status_code == 503
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def test_a_raising_model_fails_its_batch_only_and_the_server_goes_on(tmp_path: Path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    fakes.write_model(repo, "poison", runtime="PoisonRuntime")
    poison = [[13.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    with serving(repo) as server, ThreadPoolExecutor(16) as pool:
        jobs = [pool.submit(_post, server.url, "poison", poison) for _ in range(20)]
        jobs += [pool.submit(_post, server.url, "echo") for _ in range(20)]
        results = [job.result() for job in jobs]
        assert [r.status_code for r in results[:20]] == [500] * 20
        assert all("secret" not in r.text for r in results[:20]), "a 5xx never leaks internals"
        assert [r.status_code for r in results[20:]] == [200] * 20
        assert _post(server.url, "poison").status_code == 200, "the next batch of the same model is fine"
        assert server.process.poll() is None


def test_a_slow_model_sheds_load_with_503_and_retry_after_instead_of_piling_up(tmp_path: Path):
    repo = tmp_path / "repo"
    config = {"max_batch_size": 1, "max_queue_size": 3, "timeout_ms": 1500}
    fakes.write_model(repo, "slow", runtime="SlowRuntime", config=config)
    with serving(repo) as server, ThreadPoolExecutor(30) as pool:
        started = time.monotonic()
        results = list(pool.map(lambda _: _post(server.url, "slow"), range(30)))
        elapsed = time.monotonic() - started
    statuses = Counter(r.status_code for r in results)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses[200] >= 1 and statuses[503] >= 10, statuses
    assert all(int(r.headers["retry-after"]) >= 1 for r in results if r.status_code == 503)
    assert elapsed < 10, f"30 requests took {elapsed:.1f}s: the queue is not bounded"


def test_clients_gone_while_their_requests_wait_out_a_queue_delay_are_never_computed(tmp_path: Path):
    """Raw sockets send one-row requests to a model whose batch waits up to 60 s for a second row, and close:
    each request is dropped (client_closed) and takes no place in the batch, so the model computes only the
    rows of the one request whose client stayed (a full batch of two rows, at once)."""
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo", config={"max_batch_size": 2, "max_queue_delay_ms": 60000})
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]})
    with serving(repo) as server:
        address = server.url.removeprefix("http://").rsplit(":", 1)
        rows, batched = (_metric(server.url, f"modelport_batch_{m}_sum", 'model="echo"') for m in ("size", "requests"))
        for gone in range(1, 4):
            client = socket.create_connection((address[0], int(address[1])))
            head = f"POST /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
            client.sendall(head.encode() + body)
            wait_until(lambda: _metric(server.url, "modelport_inflight_requests") == 1, what="the request queued")
            client.close()
            wait_until(
                lambda n=gone: _metric(server.url, "modelport_requests_total", 'outcome="client_closed"') == n,
                what="the request dropped",
            )
        answered = _post(server.url, "echo", timeout=10)  # two rows: the batch is full at once
        assert answered.status_code == 200 and answered.json()["outputs"][0]["data"] == [2, 4, 6, 8, 10, 12]
        assert _metric(server.url, "modelport_requests_total", 'outcome="success"') == 1
        assert _metric(server.url, "modelport_batch_size_sum", 'model="echo"') - rows == 2, "rows computed"
        assert _metric(server.url, "modelport_batch_requests_sum", 'model="echo"') - batched == 1
        assert _metric(server.url, "modelport_inflight_requests") == 0
        assert server.process.poll() is None


def _metric(url: str, name: str, *labels: str) -> float:
    """The sum of the samples of ``name`` on the server's /metrics whose labels include every one of ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith((f"{name} ", f"{name}{{"))]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if all(label in line for label in labels))


def _hammer(url: str, model: str, stop: threading.Event, results: list[tuple[int, str]]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            response = client.post(f"/v2/models/{model}/infer", json=_body())
            version = response.json().get("model_version", "") if response.status_code == 200 else response.text
            results.append((response.status_code, version))


def test_hot_reload_under_load_loses_no_request(tmp_path: Path):
    """A new version dropped in while 6 clients send requests replaces the old one (latest: 1); the old
    version's in-flight requests finish. Zero failures, and both versions answered."""
    repo = tmp_path / "repo"
    fakes.write_model(repo, "slow", runtime="SlowRuntime", config={"max_batch_size": 2})
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    with serving(repo, "--poll-interval-s", "0.2") as server:
        clients = [threading.Thread(target=_hammer, args=(server.url, "slow", stop, results)) for _ in range(6)]
        for client in clients:
            client.start()
        wait_until(lambda: _answered(results, "1") >= 6, timeout=30, what="six answers from version 1")
        fakes.write_model(repo, "slow", version=2, runtime="SlowRuntime")
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/slow", timeout=5).json().get("versions") == ["2"],
            timeout=20,
            what="version 2 picked up",
        )
        wait_until(lambda: _answered(results, "2") >= 6, timeout=30, what="six answers from version 2")
        stop.set()
        for client in clients:
            client.join(30)
    statuses = Counter(status for status, _ in results)
    assert statuses == Counter({200: len(results)}), [r for r in results if r[0] != 200][:5]
    assert {version for _, version in results} == {"1", "2"}


def test_sigterm_under_load_drains_in_flight_requests_and_refuses_new_ones(tmp_path: Path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "slow", runtime="SlowRuntime", config={"max_batch_size": 1})
    with serving(repo, "--drain-timeout-s", "20") as server, ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(_post, server.url, "slow") for _ in range(6)]  # ~1.8 s of work, one at a time
        # every request has reached the server (in flight or done) before the signal
        wait_until(lambda: _reached(server.url) >= 6, timeout=10, what="six requests at the server")
        assert not all(job.done() for job in in_flight), "the signal must come while requests are in flight"
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: _ready_status(server.url) != 200, timeout=5, what="readiness false")
        late = _post_or_refused(server.url)
        assert late in (503, "refused"), late
        assert [job.result().status_code for job in in_flight] == [200] * 6
        code = server.process.wait(25)
        assert code == 0
        assert time.monotonic() - signalled < 20


def _answered(results: list[tuple[int, str]], version: str) -> int:
    return sum(1 for status, answered in list(results) if status == 200 and answered == version)


def _reached(url: str) -> float:
    """Requests the server holds or has answered, from its own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = ("modelport_inflight_requests", "modelport_requests_total")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


def _ready_status(url: str) -> int:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code
    except httpx.TransportError:
        return 0


def _post_or_refused(url: str) -> int | str:
    try:
        return _post(url, "slow", timeout=5).status_code
    except httpx.TransportError:
        return "refused"
