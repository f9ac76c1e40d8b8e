"""Start ``modelport serve`` as a subprocess and wait until it serves: the one launcher.

The server writes the ports it bound to ``--port-file`` once both listen, so ``--http-port 0``
works without parsing logs or a bind-close-reuse race; the launcher waits on that file, then on
``/v2/health/ready``. Tests, examples, ``loadtest``/``compare`` and the benchmarks start servers here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelport.errors import ModelportError

__all__ = ["LaunchOptions", "Launched", "launched", "read_port_file", "write_port_file"]


@dataclass(frozen=True)
class LaunchOptions:
    """How to start the server: ports (0 = any free one, gRPC -1 = none), environment, log, limits."""

    host: str = "127.0.0.1"
    http_port: int = 0
    grpc_port: int = 0
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    log: Path | None = None  # stdout and stderr of the server (default: discarded)
    timeout_s: float = 180.0  # until ready
    stop_timeout_s: float = 60.0  # SIGTERM, then kill
    tls_ca: Path | None = None  # the server serves TLS: connect by https://localhost, checked against this CA
    tls_client: tuple[Path, Path] | None = None  # client certificate and key for the readiness check (mTLS)
    wait_ready: bool = True  # False: return once the ports are bound
    command_prefix: tuple[str, ...] = ()  # runs the server under it, e.g. ("taskset", "-c", "0")


@dataclass(frozen=True)
class Launched:
    """A started server: where it listens and its process (the prefix's, when there is a command prefix)."""

    url: str
    grpc: str | None
    http_port: int
    grpc_port: int | None
    process: subprocess.Popen[bytes]


def write_port_file(path: Path, ports: Mapping[str, int | None]) -> None:
    """Write the bound ports (and this pid) atomically: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({**ports, "pid": os.getpid()}))
    os.replace(partial, path)


def read_port_file(path: Path) -> dict[str, Any] | None:
    """The ports a server wrote to ``path``, or None while it has not written them."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


@contextlib.contextmanager
def launched(repository: Path, *flags: str, options: LaunchOptions | None = None) -> Iterator[Launched]:
    """``modelport serve REPOSITORY FLAGS...`` until the block ends, then SIGTERM (a graceful drain).

    The exit code is ``launched.process.returncode`` after the block."""
    opts = options or LaunchOptions()
    with tempfile.TemporaryDirectory(prefix="modelport-launch-") as scratch:
        port_file = Path(scratch) / "ports.json"
        command = [*opts.command_prefix, sys.executable, "-m", "modelport.cli", "serve", str(repository)]
        command += ["--host", opts.host]
        command += ["--http-port", str(opts.http_port), "--grpc-port", str(opts.grpc_port)]
        command += ["--port-file", str(port_file), *flags]
        with _sink(opts.log) as sink:
            process = subprocess.Popen(command, env={**os.environ, **opts.env}, stdout=sink, stderr=subprocess.STDOUT)
            try:
                server = _started(process, port_file, opts)
                if opts.wait_ready:
                    _wait_ready(server, opts)
                yield server
            finally:
                _stop(process, opts.stop_timeout_s)


@contextlib.contextmanager
def _sink(log: Path | None) -> Iterator[IO[bytes] | int]:
    if log is None:
        yield subprocess.DEVNULL
        return
    with log.open("wb") as sink:
        yield sink


def _started(process: subprocess.Popen[bytes], port_file: Path, opts: LaunchOptions) -> Launched:
    deadline = time.monotonic() + opts.timeout_s
    while (ports := read_port_file(port_file)) is None:
        _check_alive(process, opts.log)
        if time.monotonic() > deadline:
            raise ModelportError(f"modelport serve bound no ports in {opts.timeout_s:g}s{_see(opts.log)}")
        time.sleep(0.02)
    host = "localhost" if opts.tls_ca else opts.host
    grpc_port = ports.get("grpc")
    return Launched(
        url=f"{'https' if opts.tls_ca else 'http'}://{host}:{ports['http']}",
        grpc=f"{host}:{grpc_port}" if grpc_port is not None else None,
        http_port=int(ports["http"]),
        grpc_port=int(grpc_port) if grpc_port is not None else None,
        process=process,
    )


def _wait_ready(server: Launched, opts: LaunchOptions) -> None:
    context = ssl.create_default_context(cafile=str(opts.tls_ca)) if opts.tls_ca else None
    if context and opts.tls_client:
        context.load_cert_chain(*opts.tls_client)
    deadline = time.monotonic() + opts.timeout_s
    while time.monotonic() < deadline:
        _check_alive(server.process, opts.log)
        if _ready(f"{server.url}/v2/health/ready", context):
            return
        time.sleep(0.05)
    raise ModelportError(f"modelport serve was not ready after {opts.timeout_s:g}s{_see(opts.log)}")


def _ready(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _check_alive(process: subprocess.Popen[bytes], log: Path | None) -> None:
    if process.poll() is None:
        return
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-10:]) if log else ""
    raise ModelportError(
        f"modelport serve exited with {process.returncode}{_see(log)}" + (f":\n{tail}" if tail else "")
    )


def _see(log: Path | None) -> str:
    return f"; see {log}" if log else ""


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
