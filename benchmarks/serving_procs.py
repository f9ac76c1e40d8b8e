"""The serving benchmark's server processes: start, first valid response, idle PSS, peak RSS, stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench_models import BenchModel
from serving_config import HERE, PY, ROOT, SERVER_OF, TRACE_SAMPLING, Config, base_env, pinned, thread_env
from serving_load import Payload, request_once

from modelport.errors import ModelportError
from modelport.launcher import LaunchOptions, launched
from modelport.ports import free_port
from modelport.torchserve_process import TorchServeOptions, archive, running_torchserve


@dataclass
class Server:
    """A server subprocess the benchmark started (``proc`` None: it did not start, see ``error``)."""

    name: str
    proc: subprocess.Popen[bytes] | None
    url: str  # http://host:port
    log: Path
    started_at: float
    grpc: str | None = None  # host:port of its KServe v2 gRPC service
    startup_s: float | None = None
    peak_rss_mb: float | None = None
    idle_pss_mb: float | None = None  # PSS of its process tree once it first answered, before any load
    error: str | None = None
    sink: str | None = None  # a traced server's OTLP sink (http://127.0.0.1:port)
    spans_exported: int | None = None  # what its sink had received when the load ended


def wait_answering(url: str, body: bytes, timeout: float, expect: bytes | None = None) -> None:
    """POST ``body`` to ``url`` every 0.1 s until it answers 200 (with exactly ``expect``, when given); exit the
    benchmark with a message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200 and (expect is None or answer.read() == expect):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g}s")


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc), children first in breadth order."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def move_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus``: ``os.sched_setaffinity(pid, ...)`` moves only the thread whose id
    is ``pid``, so threads already started stay where they were (the tracing exporter process's sender thread,
    which encodes and posts the spans, kept running on the traced server's core)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), cpus)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` plus all its descendants, in MiB."""
    total = 0
    for p in (pid, *descendants(pid)):
        with suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU time of ``pid`` and all its descendants (``tree``; else of ``pid`` alone), in seconds."""
    total = 0
    for p in (pid, *descendants(pid)) if tree else (pid,):
        with suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """How long the threads of ``pid`` and all its descendants have waited for a CPU while runnable, in seconds
    (``/proc/PID/task/TID/schedstat``): a server that waits a large share of a cell's wall time was starved by
    other processes on its core, and its req/s says more about them than about it."""
    total = 0
    for p in (pid, *descendants(pid)):
        with suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with suppress(OSError, IndexError, ValueError):
                    total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def settle(servers: Iterable[Server], window: float = 0.2, busy: float = 0.02, timeout: float = 30.0) -> None:
    """Wait until no server still works off an earlier cell (requests its load generator left queued): all
    together use at most ``busy`` CPU seconds over ``window`` seconds, or ``timeout`` has passed. Otherwise the
    next cell shares the server core with that backlog: the floor, whose handler blocks its event loop, still
    has up to a connection's worth of requests to run when its load generator stops."""
    pids = [s.proc.pid for s in servers if s.proc is not None and s.proc.poll() is None]
    deadline = time.monotonic() + timeout
    before = sum(map(cpu_seconds, pids))
    while time.monotonic() < deadline:
        time.sleep(window)
        after = sum(map(cpu_seconds, pids))
        if after - before <= busy:
            return
        before = after


def stop(server: Server, grace: float = 10.0) -> None:
    """SIGTERM the server's process tree by PID, then SIGKILL whatever is left after ``grace`` seconds."""
    if server.proc is None:
        return
    pids = [*reversed(descendants(server.proc.pid)), server.proc.pid]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=grace)
    for pid in pids:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
            time.sleep(0.05)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=5)


def _zombie(pid: int) -> bool:
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def wait_valid(server: Server, payload: Payload, timeout: float) -> None:
    """Poll until the first valid inference (sets ``startup_s``) or fail (sets ``error``)."""
    deadline = time.monotonic() + timeout
    problem: str | None = "not started"
    while time.monotonic() < deadline and server.error is None and server.proc is not None:
        if server.proc.poll() is not None:
            server.error = f"exited with {server.proc.returncode}; see {server.log}"
            return
        problem = request_once(server.url, server.grpc, payload)
        if problem is None:
            server.startup_s = time.perf_counter() - server.started_at
            return
        time.sleep(0.05)
    if server.error is None:
        server.error = f"no valid response within {timeout:.0f}s ({problem}); log tail: {_tail(server.log)}"


def _tail(path: Path, lines: int = 8) -> str:
    with suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def launch(name: str, cmd: list[str], env: dict[str, str], work: Path, url: str, cwd: Path | None = None) -> Server:
    """Start one server subprocess, logging to ``work/<name>.log``."""
    log = work / f"{name}.log"
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd or work)
    return Server(name, proc, url, log, started)


def start_floor(cfg: Config, model: BenchModel, repo: Path, work: Path, framework: str = "starlette") -> Server:
    """(b) The floor over the ONNX export: bare Starlette (``floor``) or FastAPI (``floor-fastapi``)."""
    port = free_port()
    cmd = [PY, str(HERE / "floor_server.py"), "--model", str(repo / f"{model.name}-onnx/1/model.onnx")]
    cmd += ["--framework", framework, "--port", str(port), "--threads", str(cfg.threads)]
    url = f"http://127.0.0.1:{port}"
    name = "floor" if framework == "starlette" else f"floor-{framework}"
    return launch(name, pinned(cmd, cfg.server_cpu), base_env(cfg), work, url)


@contextmanager
def modelport_server(
    cfg: Config,
    model: BenchModel,
    repo: Path,
    work: Path,
    workers: int = 0,
    wrapper: tuple[str, ...] = (),
    checkout: Path | None = None,
    sampling: float | None = None,
    exporter_own_core: bool = False,
) -> Iterator[Server]:
    """(c)/(d)/(f)/(g) ``modelport serve`` over a repository holding only the ONNX export, through the one launcher.

    Pinned to the server core, with an HTTP and a gRPC port, defaults otherwise. ``workers`` > 0: that many
    ``--workers`` on a fixed HTTP port, no gRPC, unpinned (the workers-scaling cells). ``wrapper``: a command
    the (pinned) server runs under, e.g. py-spy's. ``checkout``: run that checkout's modelport (the baseline
    server, ``modelport-base``) instead of this one's. ``sampling``: ``--tracing`` at this ratio of requests
    (``modelport-trace100``, ``modelport-trace1``), exporting over OTLP/HTTP to its own :func:`otlp_sink`;
    ``exporter_own_core``: its exporter process is moved to the load generator's core, beside the sink
    (``modelport-trace100-own``; it shares the server's core otherwise). Stopped by the launcher (SIGTERM, a
    graceful drain)."""
    served = work / "modelport-repo"
    served.mkdir(exist_ok=True)
    if not (served / f"{model.name}-onnx").exists():
        shutil.copytree(repo / f"{model.name}-onnx", served / f"{model.name}-onnx")
    name = f"modelport-w{workers}" if workers else ("modelport-wrapped" if wrapper else "modelport")
    name = "modelport-base" if checkout is not None else name
    name = f"modelport-trace{sampling * 100:g}" if sampling is not None else name
    name = f"{name}-own" if exporter_own_core else name
    with repository_server(cfg, served, work, name, workers, wrapper, checkout, sampling) as server:
        if exporter_own_core and server.proc is not None and cfg.client_cpu is not None:
            for child in descendants(server.proc.pid):  # the exporter process (tracing_process.py)
                move_process(child, {cfg.client_cpu})
        yield server


@contextmanager
def repository_server(
    cfg: Config,
    served: Path,
    work: Path,
    name: str = "modelport",
    workers: int = 0,
    wrapper: tuple[str, ...] = (),
    checkout: Path | None = None,
    sampling: float | None = None,
) -> Iterator[Server]:
    """``modelport serve served`` through the one launcher, logging to ``work/<name>.log``; the arguments as
    for :func:`modelport_server`."""
    flags = ["--intra-op-threads", str(cfg.threads), "--log-level", "warning"]
    # this checkout's modelport (or the baseline's), whatever the venv has installed or the working directory
    # holds (PYTHONSAFEPATH: ``python -m`` puts no working directory ahead of PYTHONPATH)
    root = str(checkout or ROOT)
    env = {**thread_env(cfg), "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env["PYTHONSAFEPATH"] = "1"
    options = LaunchOptions(
        http_port=free_port() if workers else 0,
        grpc_port=-1 if workers else 0,
        env=env,
        log=work / f"{name}.log",
        timeout_s=cfg.startup_timeout,
        command_prefix=() if workers else (*wrapper, *pinned([], cfg.server_cpu)),
    )
    if workers:
        flags += ["--workers", str(workers)]
    started = time.perf_counter()
    with ExitStack() as stack:
        sink = None
        if sampling is not None:
            sink = stack.enter_context(otlp_sink(cfg, work / f"{name}-sink.log"))
            env.update(_tracing_env(sink, sampling))
            flags.append("--tracing")
        try:
            up = stack.enter_context(launched(served, *flags, options=options))
        except ModelportError as exc:
            yield Server(name, None, "", work / f"{name}.log", started, error=str(exc))
            return
        yield Server(name, up.process, up.url, work / f"{name}.log", started, grpc=up.grpc, sink=sink)


def _tracing_env(sink: str, sampling: float) -> dict[str, str]:
    """A traced server's OTEL_* variables: every span of a sampled request exported to ``sink`` (OTLP/HTTP)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{sampling:g}",
    }


@contextmanager
def otlp_sink(cfg: Config, log: Path) -> Iterator[str]:
    """``otlp_sink.py`` pinned to the load generator's core until the block ends; yields its base URL."""
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            pinned([PY, str(HERE / "otlp_sink.py")], cfg.client_cpu), stdout=subprocess.PIPE, stderr=errors
        )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().decode().strip()  # its first line, once it listens
        if not port.isdigit():
            raise RuntimeError(f"the OTLP sink did not start; see {log}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def spans_received(sink: str) -> int | None:
    """How many spans ``sink`` has received (None when it does not answer)."""
    import urllib.request

    with suppress(OSError, ValueError, KeyError), urllib.request.urlopen(f"{sink}/stats", timeout=5) as reply:
        return int(json.loads(reply.read())["spans"])
    return None


@contextmanager
def torchserve_server(cfg: Config, model: BenchModel, repo: Path, work: Path) -> Iterator[Server]:
    """(e) TorchServe over the TorchScript export (no-archive, our handler) through the one TorchServe adapter,
    pinned to the server core; stopped by process group."""
    home = work / "torchserve"
    serialized = repo / f"{model.name}-torchscript/1/model.pt"
    folder = archive(serialized, HERE / "torchserve_handler.py", model.name, home / "store", directory=True)
    with torchserve_archive_server(cfg, folder, home) as server:
        yield server


@contextmanager
def torchserve_archive_server(cfg: Config, model_archive: Path, home: Path) -> Iterator[Server]:
    """TorchServe serving ``model_archive`` (a .mar or a no-archive folder in its store) with the run's batching
    (``ts_batch_size``, ``ts_max_batch_delay_ms``) and threads, pinned to the server core; ``home`` holds its
    config, tmp and logs. Stopped by process group."""
    options = TorchServeOptions(
        batch_size=cfg.ts_batch_size,
        max_batch_delay_ms=cfg.ts_max_batch_delay_ms,
        response_timeout_s=120,
        env=thread_env(cfg),
        command_prefix=tuple(pinned([], cfg.server_cpu)),
        timeout_s=cfg.startup_timeout,
    )
    started = time.perf_counter()
    with ExitStack() as stack:
        try:
            served = stack.enter_context(running_torchserve(model_archive, home, options))
        except ModelportError as exc:
            yield Server("torchserve", None, "", home / "torchserve.log", started, error=str(exc))
            return
        yield Server("torchserve", served.process, served.inference, served.log, started)


@contextmanager
def spawned(server: Server) -> Iterator[Server]:
    """``server`` until the block ends, then :func:`stop`."""
    try:
        yield server
    finally:
        stop(server)


# the request a server's startup is timed to (the first valid answer)
STARTUP_SYSTEM = {
    "floor": "floor",
    "floor-fastapi": "floor-fastapi",
    "floor-null": "null",
    "modelport": "v2-json",
    "torchserve": "torchserve",
    "modelport-base": "v2-json-base",
    "modelport-trace100": "v2-json-trace100",
    "modelport-trace100-own": "v2-json-trace100-own",
    "modelport-trace1": "v2-json-trace1",
}


def _idle_pss_mb(pid: int) -> float:
    from serving_memory import pss_mb  # serving_memory imports this module

    return pss_mb(pid)


@contextmanager
def servers(
    cfg: Config, model: BenchModel, repo: Path, work: Path, payloads: dict[str, Payload]
) -> Iterator[dict[str, Server]]:
    """Start the servers one at a time (each startup timed alone, then its idle PSS); peak RSS, then stop them all."""
    starters: dict[str, Callable[[], AbstractContextManager[Server]]] = {
        "floor": lambda: spawned(start_floor(cfg, model, repo, work)),
        "floor-fastapi": lambda: spawned(start_floor(cfg, model, repo, work, framework="fastapi")),
        "floor-null": lambda: spawned(start_floor(cfg, model, repo, work, framework="null")),
        "modelport": lambda: modelport_server(cfg, model, repo, work),
        "torchserve": lambda: torchserve_server(cfg, model, repo, work),
        "modelport-base": lambda: modelport_server(cfg, model, repo, work, checkout=cfg.baseline),
        **{name: _traced(cfg, model, repo, work, *how) for name, how in TRACE_SAMPLING.items()},
    }
    wanted = {SERVER_OF[system] for system in cfg.systems if system in SERVER_OF}
    started: dict[str, Server] = {}
    with ExitStack() as stack:
        try:
            for name in (name for name in starters if name in wanted):
                server = started[name] = stack.enter_context(starters[name]())
                wait_valid(server, payloads[STARTUP_SYSTEM[name]], cfg.startup_timeout)
                if server.error is None and server.proc is not None:
                    server.idle_pss_mb = _idle_pss_mb(server.proc.pid)
                print(f"  {name}: " + (f"ready in {server.startup_s:.2f}s" if server.error is None else server.error))
            yield started
        finally:
            for server in started.values():
                if server.proc is not None and server.proc.poll() is None:
                    server.peak_rss_mb = peak_rss_mb(server.proc.pid)
                if server.sink is not None:
                    server.spans_exported = spans_received(server.sink)


def _traced(
    cfg: Config, model: BenchModel, repo: Path, work: Path, sampling: float, own_core: bool
) -> Callable[[], AbstractContextManager[Server]]:
    return lambda: modelport_server(cfg, model, repo, work, sampling=sampling, exporter_own_core=own_core)
