"""``--workers N``: N server processes on the same port (SO_REUSEPORT), supervised together.

Each worker is a full server (its own runtimes and batchers) started as ``modelport serve``
with ``--workers 1 --reuse-port``; the kernel spreads connections across them. Prometheus
metrics are aggregated through the client's multiprocess mode. SIGTERM/SIGINT are forwarded
to every worker, each drains, and the supervisor exits 0 when all of them did.

Settings reach the workers as ``MODELPORT_*`` environment variables, except the keys themselves
(``--api-key``, ``--control-key``): each worker reads them from a pipe it inherits (its number in
``MODELPORT_SECRETS_FD``), so no worker's ``/proc/<pid>/environ`` or command line holds a key.
Key *files* are passed as paths, and every worker watches the file for rotation itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelport.errors import InvalidArgumentError
from modelport.launcher import write_port_file
from modelport.serving.settings import ServerSettings

__all__ = ["METRICS_DIR_ENV", "SECRETS_FD_ENV", "run_workers", "with_inherited_secrets", "worker_env"]

log = logging.getLogger("modelport.workers")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SECRETS_FD_ENV = "MODELPORT_SECRETS_FD"
_SECRETS = frozenset({"api_key", "control_key"})
_PIPE_CAPACITY = 65536  # Linux's default: written before the worker starts, so it must fit at once


def worker_env(settings: ServerSettings, metrics_dir: str) -> dict[str, str]:
    """The environment that makes ``modelport serve`` one worker of ``settings``: every setting but the keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    for name, value in settings.model_dump(mode="json", exclude=set(_SECRETS), exclude_none=True).items():
        env[f"MODELPORT_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(MODELPORT_WORKERS="1", MODELPORT_REUSE_PORT="true", **{METRICS_DIR_ENV: metrics_dir})
    return env


def run_workers(settings: ServerSettings) -> int:
    """Start ``settings.workers`` processes and supervise them until a signal or a crash."""
    if settings.model_control:
        raise InvalidArgumentError(
            "--model-control with --workers: a load, unload or registration would change the models of the one "
            "worker that answers it, and the others would go on serving the old ones; use --workers 1 with "
            "--model-control, or change the repository and let --poll-interval-s load it into every worker"
        )
    with contextlib.ExitStack() as reserved, tempfile.TemporaryDirectory(prefix="modelport-metrics-") as metrics_dir:
        settings = _fixed_ports(settings, reserved)
        env, secrets = worker_env(settings, os.environ.get(METRICS_DIR_ENV) or metrics_dir), _secrets(settings)
        command = [sys.executable, "-m", "modelport.cli", "serve", str(settings.repository)]
        bound = [Path(metrics_dir) / f"ports-{i}.json" for i in range(settings.workers)]
        workers = [_start(command, {**env, "MODELPORT_PORT_FILE": str(b)}, secrets) for b in bound]
        log.info("started %d workers: %s", len(workers), [w.pid for w in workers])
        stopping = {"signal": False}
        ports = _PortFile(settings, bound)

        def forward(signum: int, _: object) -> None:
            stopping["signal"] = True
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return _supervise(workers, stopping, settings.drain_timeout_s, ports)
        finally:
            ports.remove()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()


def _fixed_ports(settings: ServerSettings, reserved: contextlib.ExitStack) -> ServerSettings:
    """``settings`` with a free port chosen for each port given as 0: every worker binds the same one. The port
    stays bound here (SO_REUSEPORT, never listening: the kernel sends no connection to it) until ``reserved``
    closes, so no other process takes it between the choice and the workers' binds."""
    update = {}
    for name in ("http_port", "grpc_port"):
        if getattr(settings, name) == 0:
            family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
            holder = reserved.enter_context(socket.socket(family, socket.SOCK_STREAM))
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                holder.bind((settings.host, 0))
            except OSError as exc:
                raise InvalidArgumentError(f"cannot bind {settings.host} to choose a free port: {exc}") from exc
            update[name] = holder.getsockname()[1]
    return settings.model_copy(update=update) if update else settings


def _secrets(settings: ServerSettings) -> bytes | None:
    """The keys the workers need, as the bytes each one's pipe carries (None: no key given as a value)."""
    secrets = {name: getattr(settings, name) for name in sorted(_SECRETS) if getattr(settings, name)}
    data = json.dumps(secrets).encode() if secrets else None
    if data and len(data) >= _PIPE_CAPACITY:
        raise InvalidArgumentError("--api-key / --control-key are too long to pass to the workers")
    return data


def _start(command: list[str], env: dict[str, str], secrets: bytes | None) -> subprocess.Popen[bytes]:
    """One worker; its keys, if any, go through a pipe it inherits, never through its environment."""
    if secrets is None:
        return subprocess.Popen(command, env=env)
    read, write = os.pipe()
    try:
        with os.fdopen(write, "wb") as sink:
            sink.write(secrets)
        return subprocess.Popen(command, env={**env, SECRETS_FD_ENV: str(read)}, pass_fds=(read,))
    finally:
        os.close(read)


def with_inherited_secrets(settings: ServerSettings) -> ServerSettings:
    """In a worker: ``settings`` with the keys its supervisor wrote to the inherited pipe (else unchanged)."""
    fd = os.environ.pop(SECRETS_FD_ENV, None)
    if fd is None:
        return settings
    with os.fdopen(int(fd), "rb") as source:
        secrets = json.loads(source.read())
    return settings.model_copy(update={k: v for k, v in secrets.items() if k in _SECRETS})


class _PortFile:
    """The supervisor's ``--port-file``: written once every worker has written its own (all bound)."""

    def __init__(self, settings: ServerSettings, bound: list[Path]) -> None:
        self.path = Path(settings.port_file) if settings.port_file else None
        self.ports: dict[str, int | None] = {
            "http": settings.http_port,
            "grpc": settings.grpc_port if settings.grpc_port >= 0 else None,
        }
        self.bound = bound
        self.written = False

    def update(self) -> None:
        if self.path and not self.written and all(b.exists() for b in self.bound):
            write_port_file(self.path, self.ports)
            self.written = True

    def remove(self) -> None:
        if self.path and self.written:
            self.path.unlink(missing_ok=True)


def _supervise(
    workers: list[subprocess.Popen[bytes]], stopping: dict[str, bool], drain: float, ports: _PortFile
) -> int:
    while not stopping["signal"]:
        ports.update()
        dead = [w for w in workers if w.poll() is not None]
        if dead:
            log.error("worker %d exited with %s; stopping the others", dead[0].pid, dead[0].returncode)
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            _wait_all(workers, drain + 10)
            return 1
        time.sleep(0.2)
    codes = _wait_all(workers, drain + 10)
    return 0 if all(code == 0 for code in codes) else 1


def _wait_all(workers: list[subprocess.Popen[bytes]], timeout: float) -> list[int | None]:
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return [w.returncode for w in workers]
