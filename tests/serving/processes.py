"""Real ``modelport serve`` processes for tests: free ports, readiness polling, SIGTERM on exit."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from modelport.launcher import LaunchOptions, launched
from modelport.ports import free_port as free_port  # below the ephemeral range: see modelport/ports.py

ROOT = Path(__file__).resolve().parents[2]


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
    tls_client: tuple[Path, Path] | None = None,
) -> Iterator[Served]:
    """Start ``modelport serve REPO`` through the one launcher (ports 0 unless given, read back from its
    --port-file), yield once /v2/health/ready is 200, then SIGTERM it and require exit code 0 (a graceful
    drain). With ``tls_ca`` (the server was given ``--tls-certfile``), the URL is https://localhost; ``tls_client``
    (certificate, key) is what the readiness check presents to a server that requires one (``--tls-client-ca``)."""
    http_port, grpc_port = ports or (0, 0)
    options = LaunchOptions(
        http_port=http_port,
        grpc_port=grpc_port,
        env={"PYTHONPATH": str(ROOT), **(env or {})},
        log=log,
        timeout_s=timeout,
        tls_ca=tls_ca,
        tls_client=tls_client,
    )
    with launched(repo, *flags, options=options) as server:
        yield Served(server.url, server.grpc or "", server.process)
    code = server.process.returncode
    assert code == 0, f"the server exited with {code} (SIGTERM must drain and exit 0)"


async def until(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Yield to the event loop until ``predicate`` holds; fail after ``timeout`` seconds (a bounded busy-wait)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g}s")
        await asyncio.sleep(0)


def wait_until(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll ``predicate`` every 0.1 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout:g}s")


def curl(*arguments: str) -> bytes:
    """What ``curl -sS --fail-with-body ARGUMENTS`` prints; a failed transfer or an HTTP error fails the test."""
    done = subprocess.run(["curl", "-sS", "--fail-with-body", *arguments], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
