"""Real ``modelport serve`` processes for tests: free ports, readiness polling, SIGTERM on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Served:
    """A running server: its HTTP base URL, gRPC address and process."""

    url: str
    grpc: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def serving(
    repo: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 180,
    ports: tuple[int, int] | None = None,
    tls_ca: Path | None = None,
) -> Iterator[Served]:
    """Start ``modelport serve REPO`` on free ports (or the given HTTP and gRPC ports), yield once
    /v2/health/ready is 200, then SIGTERM it and require exit code 0 (a graceful drain). With
    ``tls_ca`` (the server was given ``--tls-certfile``), the URL is https://localhost, checked against it."""
    http_port, grpc_port = ports or (free_port(), free_port())
    command = [
        sys.executable,
        "-m",
        "modelport.cli",
        "serve",
        str(repo),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *flags,
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    sink = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=environment, stdout=sink, stderr=subprocess.STDOUT)
    host = "localhost" if tls_ca else "127.0.0.1"
    scheme = "https" if tls_ca else "http"
    served = Served(f"{scheme}://{host}:{http_port}", f"{host}:{grpc_port}", process)
    try:
        _wait_ready(served, timeout, log, tls_ca)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        if log:
            sink.close()  # type: ignore[union-attr]
    assert code == 0, f"the server exited with {code} (SIGTERM must drain and exit 0)"


def _wait_ready(served: Served, timeout: float, log: Path | None, tls_ca: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert served.process.poll() is None, f"server exited with {served.process.returncode}; log: {log}"
        try:
            ready = httpx.get(f"{served.url}/v2/health/ready", timeout=1, verify=str(tls_ca) if tls_ca else True)
            if ready.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    served.process.kill()
    raise AssertionError(f"server did not become ready in {timeout:g}s; log: {log}")


def wait_until(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll ``predicate`` every 0.1 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout:g}s")
