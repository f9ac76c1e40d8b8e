"""The one adapter around a ``modelport serve`` subprocess that ``compare`` starts (free ports, readiness)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import ModelportError, UnavailableError
from modelport.loadtest.wire import http_call

__all__ = ["RunningServer", "free_port", "running_server"]


@dataclass(frozen=True)
class RunningServer:
    """Where the started server listens."""

    url: str
    grpc: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    repository: Path, flags: tuple[str, ...], log: Path, timeout: float = 600
) -> Iterator[RunningServer]:
    """``modelport serve REPOSITORY`` on free ports until the block ends (then SIGTERM, a graceful drain)."""
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "modelport.cli",
        "serve",
        str(repository),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--log-level",
        "warning",
        *flags,
    ]
    server = RunningServer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_ready(server, process, timeout)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: RunningServer, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(server.log.read_text(errors="replace").strip().splitlines()[-10:])
            raise ModelportError(f"modelport serve exited with {process.returncode}; {server.log}:\n{tail}")
        with contextlib.suppress(UnavailableError):
            if http_call(server.url + "/v2/health/ready", timeout=2).status == 200:
                return
        time.sleep(0.2)
    raise ModelportError(f"modelport serve was not ready after {timeout:g}s; see {server.log}")
