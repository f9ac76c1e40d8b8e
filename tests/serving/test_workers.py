"""``--workers 2``: two processes on one port, metrics summed across them, one SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.serving import fakes
from tests.serving.test_rest import _infer_body
from tests.serving.test_server import _free_port

ROOT = Path(__file__).resolve().parents[2]


def test_two_workers_share_a_port_and_their_metrics(tmp_path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelport.cli",
            "serve",
            str(repo),
            "--http-port",
            str(port),
            "--workers",
            "2",
            "--grpc-port",
            str(_free_port()),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline:
            workers = psutil.Process(supervisor.pid).children()
            try:
                if len(workers) == 2 and httpx.get(f"{url}/v2/models/echo/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert len(workers) == 2
        for worker in workers:  # both workers must be up before we count
            while not any(c.status == "LISTEN" for c in worker.net_connections()):
                time.sleep(0.05)
        with httpx.Client(base_url=url) as http:
            statuses = [
                http.post("/v2/models/echo/infer", json=_infer_body(), headers={"Connection": "close"}).status_code
                for _ in range(40)
            ]
        assert statuses == [200] * 40
        metrics = httpx.get(f"{url}/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("modelport_requests_total{") and "success" in ln)
        assert float(line.rsplit(" ", 1)[1]) == 40.0, "the counter sums both workers"
        per_worker = [
            float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith("modelport_worker_requests{")
        ]
        assert len(per_worker) == 2 and sum(per_worker) == 40 and min(per_worker) > 0, per_worker
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(60)
    assert code == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
