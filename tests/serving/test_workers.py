"""``--workers 2``: two processes on one port, metrics summed across them, one SIGTERM stops all."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil

from tests.serving import fakes
from tests.serving.processes import free_port, serving
from tests.serving.test_rest import _infer_body


def _ports() -> tuple[int, int]:
    """Fixed ports (the tests without them check that the supervisor chooses free ones for port 0)."""
    return free_port(), free_port()


def test_two_workers_share_a_port_and_their_metrics(tmp_path):
    """With --http-port 0 --grpc-port 0 the supervisor chooses one free port of each for every worker."""
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    with serving(repo, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": ""}, timeout=60) as server:
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) == 2
        http_port, grpc_port = int(server.url.rsplit(":", 1)[1]), int(server.grpc.rsplit(":", 1)[1])
        assert http_port != grpc_port
        for worker in workers:  # the supervisor's port file came after every worker had bound its ports
            listening = {c.laddr.port for c in worker.net_connections() if c.status == "LISTEN"}
            assert {http_port, grpc_port} <= listening, listening
        with httpx.Client(base_url=server.url) as http:
            statuses = [
                http.post("/v2/models/echo/infer", json=_infer_body(), headers={"Connection": "close"}).status_code
                for _ in range(40)
            ]
            metrics = http.get("/metrics").text
        assert statuses == [200] * 40
        line = next(ln for ln in metrics.splitlines() if ln.startswith("modelport_requests_total{") and "success" in ln)
        assert float(line.rsplit(" ", 1)[1]) == 40.0, "the counter sums both workers"
        per_worker = [
            float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith("modelport_worker_requests{")
        ]
        assert len(per_worker) == 2 and sum(per_worker) == 40 and min(per_worker) > 0, per_worker
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_no_request_reaches_a_worker_that_is_still_loading(tmp_path):
    """A worker listens only once its repository is loaded, and the supervisor's port file waits for every
    worker: right after start, every new connection is served, although one worker loaded seconds later."""
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo", runtime="StaggeredLoadRuntime")
    env = {"PROMETHEUS_MULTIPROC_DIR": "", "FAKES_LOAD_CLAIM": str(tmp_path / "claim")}
    started = time.monotonic()
    with serving(repo, "--workers", "2", env=env, timeout=60, ports=_ports()) as server:
        assert time.monotonic() - started >= fakes.STAGGER_SECONDS, "the port file came before the slow worker loaded"
        with httpx.Client(base_url=server.url) as http:
            answers = [
                http.post("/v2/models/echo/infer", json=_infer_body(), headers={"Connection": "close"})
                for _ in range(30)
            ]
            metrics = http.get("/metrics").text
        assert [a.status_code for a in answers] == [200] * 30, [a.text for a in answers if a.status_code != 200]
        per_worker = [
            float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith("modelport_worker_requests{")
        ]
        assert len(per_worker) == 2 and min(per_worker) > 0, f"both workers served: {per_worker}"


def test_two_workers_share_the_grpc_port(tmp_path):
    import numpy as np
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    with serving(repo, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": ""}, timeout=60, ports=_ports()) as server:
        workers = psutil.Process(server.process.pid).children()
        grpc_port = int(server.grpc.rsplit(":", 1)[1])
        for worker in workers:  # each worker listens on the HTTP and the gRPC port (before the port file)
            assert grpc_port in {c.laddr.port for c in worker.net_connections() if c.status == "LISTEN"}
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        for _ in range(30):  # a new connection each time, so the kernel spreads them over both workers
            client = grpcclient.InferenceServerClient(server.grpc)
            tensor = grpcclient.InferInput("x", [2, 3], "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("echo", [tensor])
            np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
            client.close()
        metrics = httpx.get(f"{server.url}/metrics").text
        per_worker = [
            float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith("modelport_worker_requests{")
        ]
        assert len(per_worker) == 2 and sum(per_worker) == 30 and min(per_worker) > 0, per_worker


def test_model_control_is_refused_with_workers(tmp_path, capsys):
    """Each worker has its own models: a load, unload or registration would reach only the one that answers it."""
    from modelport.cli import main

    fakes.write_model(tmp_path / "repo", "echo")
    http, grpc = _ports()
    argv = ["serve", str(tmp_path / "repo"), "--workers", "2", "--model-control"]
    assert main([*argv, "--http-port", str(http), "--grpc-port", str(grpc)]) == 2
    assert "--model-control with --workers" in capsys.readouterr().err


def test_worker_environments_hold_no_key(tmp_path):
    """The keys reach the workers through an inherited pipe: no worker's environment or command line has one."""
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    api_key, control_key = "api-key-5b1e0c7d9a", "control-key-3f8a2e6b4c"
    flags = ("--workers", "2", "--api-key", api_key)
    env = {"PROMETHEUS_MULTIPROC_DIR": "", "MODELPORT_CONTROL_KEY": control_key}
    with serving(repo, *flags, env=env, timeout=60, ports=_ports()) as server:
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) == 2
        for worker in workers:
            exposed = (
                Path(f"/proc/{worker.pid}/environ").read_bytes() + Path(f"/proc/{worker.pid}/cmdline").read_bytes()
            )
            assert b"MODELPORT_HTTP_PORT" in exposed, "the environment was read"
            assert api_key.encode() not in exposed and control_key.encode() not in exposed
        for _ in range(20):  # new connections, spread over both workers
            close = {"Connection": "close"}
            assert (
                httpx.post(f"{server.url}/v2/models/echo/infer", json=_infer_body(), headers=close).status_code == 401
            )
            good = httpx.post(
                f"{server.url}/v2/models/echo/infer", json=_infer_body(), headers={**close, "X-API-Key": api_key}
            )
            assert good.status_code == 200, good.text
            unload = httpx.post(
                f"{server.url}/v2/repository/models/nope/unload", headers={**close, "X-API-Key": control_key}
            )
            assert unload.status_code != 401, "the control key reached every worker"
            wrong = httpx.post(
                f"{server.url}/v2/repository/models/nope/unload", headers={**close, "X-API-Key": "not-the-key"}
            )
            assert wrong.status_code == 401, "every worker has a control key to check"
