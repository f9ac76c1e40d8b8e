"""Serving shoot-out: modelport's KServe v2 server against the raw runtime, a minimal FastAPI floor and TorchServe.

    python benchmarks/serving.py [--models mlp,resnet18] [--concurrency 1,8,32] [--duration 10] [--quick]
                                 [--out benchmarks/results/serving.json]

Systems, measured side by side in one run (servers pinned to one core, the load generator to another):

* (a) ``raw``: onnxruntime ``session.run`` in-process at batch 1 and 32 -- the limit;
* (b) ``floor``: a minimal FastAPI/uvicorn handler (orjson in, onnxruntime, orjson out) -- the Python floor;
* (c) ``v2-json``: ``modelport serve`` over the ONNX export, KServe v2 JSON;
* (d) ``v2-binary``: the same server, KServe v2 binary tensor extension (binary in and out);
* (e) ``torchserve``: TorchServe 0.12 over the TorchScript export, with its dynamic batching on.

Every request carries one item. All servers are started (one at a time, so each startup is timed alone)
before any load, then the cells are interleaved (for each concurrency, every system in turn) so machine
noise hits them alike. Load comes from ``wrk`` (``-t1 --latency`` with ``post.lua``) or, when wrk is not
installed, from the built-in asyncio generator ``loadgen.py``; the JSON says which. Results are printed as a
table and written as JSON; the project's targets are printed as PASS/FAIL lines (informational: the exit
status is non-zero only when a system could not be started or answered wrongly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_models import MODELS, BenchModel, build  # noqa: E402

SYSTEMS = ("floor", "v2-json", "v2-binary", "torchserve")
LABELS = {
    "raw-b1": "(a) ort b1",
    "raw-b32": "(a) ort b32",
    "floor": "(b) floor",
    "v2-json": "(c) v2 json",
    "v2-binary": "(d) v2 bin",
    "torchserve": "(e) torchserve",
}
PY = sys.executable


# --------------------------------------------------------------------------- processes


@dataclass
class Server:
    """A server subprocess the benchmark started (and must stop)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    started_at: float
    startup_s: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` (unchanged when pinning is off)."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


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


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` plus all its descendants, in MiB."""
    total = 0
    for p in (pid, *descendants(pid)):
        with suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def stop(server: Server, grace: float = 10.0) -> None:
    """SIGTERM the server's process tree by PID, then SIGKILL whatever is left after ``grace`` seconds."""
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


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Payload:
    """One request body and the headers it needs."""

    body_file: Path
    content_type: str
    header_length: int | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def write_payloads(model: BenchModel, folder: Path) -> dict[str, Payload]:
    """The v2 JSON body (floor, v2-json, torchserve) and the v2 binary body, for one item."""
    x = np.random.default_rng(0).standard_normal((1, *model.input_shape), dtype=np.float32)
    item = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    json_body = orjson.dumps({"inputs": [{**item, "data": x.ravel()}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    header = orjson.dumps(
        {
            "inputs": [{**item, "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    )
    (folder / "body.json").write_bytes(json_body)
    (folder / "body.bin").write_bytes(header + x.astype("<f4").tobytes())
    return {
        "json": Payload(folder / "body.json", "application/json"),
        "binary": Payload(folder / "body.bin", "application/octet-stream", len(header)),
    }


def check_response(status: int, headers: Any, body: bytes, width: int) -> str | None:
    """None if the response is a 200 carrying one output of shape [1, width]; else what is wrong."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    length = headers.get("Inference-Header-Content-Length")
    try:
        header = orjson.loads(body if length is None else body[: int(length)])
        output = header["outputs"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return f"not a v2 response: {body[:200]!r}"
    if list(output.get("shape", [])) != [1, width]:
        return f"output shape {output.get('shape')} != [1, {width}]"
    if length is not None:
        size = output.get("parameters", {}).get("binary_data_size")
        if size != 4 * width or len(body) - int(length) != size:
            return f"binary output of {size} bytes, expected {4 * width}"
    elif len(output.get("data", [])) != width:
        return f"{len(output.get('data', []))} output values, expected {width}"
    return None


def request_once(url: str, payload: Payload, width: int, timeout: float = 30.0) -> str | None:
    """Send one request; None if it came back 200 with the right output shape, else the problem."""
    request = urllib.request.Request(url, data=payload.body_file.read_bytes(), headers=payload.headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return check_response(response.status, response.headers, response.read(), width)
    except urllib.error.HTTPError as exc:
        return check_response(exc.code, exc.headers, exc.read(), width)
    except (OSError, urllib.error.URLError) as exc:
        return f"{type(exc).__name__}: {exc}"


def wait_valid(server: Server, payload: Payload, width: int, timeout: float) -> None:
    """Poll until the first valid inference (sets ``startup_s``) or fail (sets ``error``)."""
    deadline = time.monotonic() + timeout
    problem: str | None = "not started"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            server.error = f"exited with {server.proc.returncode}; see {server.log}"
            return
        problem = request_once(server.url, payload, width, timeout=10.0)
        if problem is None:
            server.startup_s = time.perf_counter() - server.started_at
            return
        time.sleep(0.05)
    server.error = f"no valid response within {timeout:.0f}s ({problem}); log tail: {_tail(server.log)}"


def _tail(path: Path, lines: int = 8) -> str:
    with suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --------------------------------------------------------------------------- the systems


@dataclass
class Config:
    """Everything the run was told."""

    models: list[str]
    concurrency: list[int]
    duration: float
    raw_duration: float
    threads: int
    server_cpu: int | None
    client_cpu: int | None
    loadgen: str
    ts_batch_size: int
    ts_max_batch_delay_ms: int
    startup_timeout: float
    out: Path
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    workers_scaling: bool = False


def launch(name: str, cmd: list[str], env: dict[str, str], work: Path, url: str, cwd: Path | None = None) -> Server:
    """Start one server subprocess, logging to ``work/<name>.log``."""
    log = work / f"{name}.log"
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd or work)
    return Server(name, proc, url, log, started)


def base_env(cfg: Config) -> dict[str, str]:
    """The environment every server gets: one compute thread each (they share one core)."""
    env = dict(os.environ)
    threads = str(cfg.threads or "")
    env.update({"OMP_NUM_THREADS": threads or "1", "MODELPORT_BENCH_THREADS": str(cfg.threads)})
    return env


def start_floor(cfg: Config, model: BenchModel, repo: Path, work: Path) -> Server:
    """(b) The FastAPI floor over the ONNX export."""
    port = free_port()
    cmd = [PY, str(HERE / "floor_server.py"), "--model", str(repo / f"{model.name}-onnx/1/model.onnx")]
    cmd += ["--port", str(port), "--threads", str(cfg.threads)]
    url = f"http://127.0.0.1:{port}/v2/models/{model.name}/infer"
    return launch("floor", pinned(cmd, cfg.server_cpu), base_env(cfg), work, url)


def start_modelport(cfg: Config, model: BenchModel, repo: Path, work: Path, workers: int = 0) -> Server:
    """(c)/(d) ``modelport serve`` over a repository holding only the ONNX export (defaults otherwise).

    ``workers`` > 0: that many ``--workers``, unpinned (the workers-scaling cells)."""
    served = work / "modelport-repo"
    served.mkdir(exist_ok=True)
    link = served / f"{model.name}-onnx"
    if not link.exists():
        shutil.copytree(repo / f"{model.name}-onnx", link)
    port = free_port()
    cmd = [str(Path(PY).parent / "modelport"), "serve", str(served), "--http-port", str(port), "--grpc-port", "-1"]
    cmd += ["--intra-op-threads", str(cfg.threads), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}/v2/models/{model.name}-onnx/infer"
    if workers:
        cmd += ["--workers", str(workers)]
        return launch(f"modelport-w{workers}", cmd, base_env(cfg), work, url)
    return launch("modelport", pinned(cmd, cfg.server_cpu), base_env(cfg), work, url)


def workers_scaling(
    cfg: Config, model: BenchModel, repo: Path, work: Path, payloads: dict[str, Payload]
) -> dict[str, Any]:
    """v2 binary at the highest concurrency with ``--workers 1`` and ``--workers 2``, servers unpinned.

    On a 2-core machine the load generator shares the cores with the workers, so this understates
    what a second worker gives on a bigger host; it shows that the workers really share the load."""
    concurrency = max(cfg.concurrency)
    rps: dict[str, float] = {}
    for workers in (1, 2):
        server = start_modelport(cfg, model, repo, work, workers=workers)
        try:
            wait_valid(server, payloads["binary"], model.output_width, cfg.startup_timeout)
            rps[str(workers)] = float(run_load(cfg, server.url, payloads["binary"], concurrency)["rps"])
        finally:
            stop(server)
    print(f"  workers 1 -> 2 (v2 binary, c={concurrency}): {rps['1']:.0f} -> {rps['2']:.0f} req/s")
    return {"concurrency": concurrency, "rps": rps, "scaling": rps["2"] / rps["1"] if rps["1"] else None}


def start_torchserve(cfg: Config, model: BenchModel, repo: Path, work: Path) -> Server:
    """(e) TorchServe in the foreground with its own TMPDIR/TEMP, logs, model store and config."""
    home = work / "torchserve"
    tmp, store, logs = home / "tmp", home / "store", home / "logs"
    for folder in (tmp, store, logs):
        folder.mkdir(parents=True, exist_ok=True)
    archive(model, repo, store)
    ports = [free_port() for _ in range(3)]
    models = {
        model.name: {
            "1.0": {
                "defaultVersion": True,
                "marName": model.name,
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": cfg.ts_batch_size,
                "maxBatchDelay": cfg.ts_max_batch_delay_ms,
                "responseTimeout": 120,
            }
        }
    }
    properties = {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "model_store": str(store),
        "load_models": model.name,
        "models": json.dumps(models),
        "default_workers_per_model": "1",
        "disable_token_authorization": "true",
        "disable_system_metrics": "true",
        "install_py_dep_per_model": "false",
        "max_request_size": str(64 * 1024 * 1024),
        "max_response_size": str(64 * 1024 * 1024),
    }
    config = home / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    env = base_env(cfg)
    env.update({"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)})
    cmd = [str(Path(PY).parent / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
    cmd += ["--ts-config", str(config), "--model-store", str(store)]
    url = f"http://127.0.0.1:{ports[0]}/predictions/{model.name}"
    return launch("torchserve", pinned(cmd, cfg.server_cpu), env, work, url, cwd=home)


def archive(model: BenchModel, repo: Path, store: Path) -> None:
    """``torch-model-archiver`` (no-archive layout) of the TorchScript export with our handler."""
    cmd = [str(Path(PY).parent / "torch-model-archiver"), "--model-name", model.name, "--version", "1.0"]
    cmd += ["--serialized-file", str(repo / f"{model.name}-torchscript/1/model.pt")]
    cmd += ["--handler", str(HERE / "torchserve_handler.py"), "--export-path", str(store)]
    cmd += ["--archive-format", "no-archive", "--force"]
    subprocess.run(cmd, check=True, capture_output=True)


def torchserve_missing() -> str | None:
    """Why TorchServe cannot run here, or None."""
    if shutil.which("java") is None:
        return "java is not installed"
    for tool in ("torchserve", "torch-model-archiver"):
        if not (Path(PY).parent / tool).exists():
            return f"{tool} is not installed in the virtualenv"
    return None


# --------------------------------------------------------------------------- load generation


def run_raw(cfg: Config, model: BenchModel, repo: Path) -> dict[str, Any]:
    """(a) onnxruntime in a subprocess pinned to the server core."""
    cmd = [PY, str(HERE / "raw_runtime.py"), "--model", str(repo / f"{model.name}-onnx/1/model.onnx")]
    cmd += ["--shape", "x".join(map(str, model.input_shape)), "--batch", "1,32"]
    cmd += ["--duration", str(cfg.raw_duration), "--threads", str(cfg.threads)]
    done = subprocess.run(pinned(cmd, cfg.server_cpu), check=True, capture_output=True, env=base_env(cfg))
    result: dict[str, Any] = json.loads(done.stdout)
    return result


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unparseable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms) and error counts from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if rps is None or total is None:
        raise ValueError(f"unparseable wrk output:\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", output, re.MULTILINE))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2) + total.group(3)) / 1e3,
        "rps": float(rps.group(1)),
        "p50_ms": _ms(latency["50"]) if "50" in latency else float("nan"),
        "p99_ms": _ms(latency["99"]) if "99" in latency else float("nan"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
    }


def run_load(cfg: Config, url: str, payload: Payload, concurrency: int) -> dict[str, Any]:
    """One cell: ``concurrency`` keep-alive connections for ``cfg.duration`` seconds."""
    if cfg.loadgen == "wrk":
        seconds = max(1, round(cfg.duration))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "60s", "--latency"]
        cmd += ["-s", str(HERE / "post.lua"), url]
        env = dict(os.environ, WRK_BODY_FILE=str(payload.body_file), WRK_CONTENT_TYPE=payload.content_type)
        env["WRK_HEADER_LENGTH"] = "" if payload.header_length is None else str(payload.header_length)
        done = subprocess.run(pinned(cmd, cfg.client_cpu), capture_output=True, text=True, env=env, check=True)
        return parse_wrk(done.stdout)
    cmd = [PY, str(HERE / "loadgen.py"), "--url", url, "--body", str(payload.body_file)]
    cmd += ["--concurrency", str(concurrency), "--duration", str(cfg.duration)]
    cmd += [arg for k, v in payload.headers().items() for arg in ("--header", f"{k}: {v}")]
    done = subprocess.run(pinned(cmd, cfg.client_cpu), capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --------------------------------------------------------------------------- one model


@contextmanager
def servers(
    cfg: Config, model: BenchModel, repo: Path, work: Path, payloads: dict[str, Payload]
) -> Iterator[dict[str, Server]]:
    """Start the servers one at a time (each startup timed alone); stop them all on exit."""
    started: dict[str, Server] = {}
    starters = {"floor": start_floor, "modelport": start_modelport, "torchserve": start_torchserve}
    wanted = {"floor": "floor" in cfg.systems, "torchserve": "torchserve" in cfg.systems}
    wanted["modelport"] = bool({"v2-json", "v2-binary"} & set(cfg.systems))
    try:
        for name, starter in starters.items():
            if not wanted[name]:
                continue
            server = starter(cfg, model, repo, work)
            started[name] = server
            wait_valid(server, payloads["json"], model.output_width, cfg.startup_timeout)
            print(f"  {name}: " + (f"ready in {server.startup_s:.2f}s" if server.error is None else server.error))
        yield started
    finally:
        for server in started.values():
            if server.proc.poll() is None:
                server.peak_rss_mb = peak_rss_mb(server.proc.pid)
            stop(server)


def endpoint(system: str, running: dict[str, Server], payloads: dict[str, Payload]) -> tuple[Server, Payload]:
    """The server and payload a system is measured with."""
    if system in ("v2-json", "v2-binary"):
        return running["modelport"], payloads["binary" if system == "v2-binary" else "json"]
    return running[system], payloads["json"]


def bench_model(cfg: Config, model: BenchModel, work: Path) -> dict[str, Any]:
    """Export one model, measure (a), start the servers, run every cell; the model's result dict."""
    import modelport

    repo = work / "repo"
    spec = "x:float32:-1x" + "x".join(map(str, model.input_shape))
    modelport.export(
        source=build(model.name),
        repository=repo,
        name=model.name,
        formats=("onnx", "torchscript"),
        inputs=(modelport.TensorSpec.parse(spec),),
        output_names=("y",),
        quiet=True,
    )
    payloads = write_payloads(model, work)
    result: dict[str, Any] = {"raw": {}, "servers": {}, "cells": []}
    if "raw" in cfg.systems:
        print(f"  raw onnxruntime, {cfg.raw_duration:g}s per batch size")
        result["raw"] = run_raw(cfg, model, repo)
    systems = [s for s in SYSTEMS if s in cfg.systems]
    with servers(cfg, model, repo, work, payloads) as running:
        for concurrency in cfg.concurrency:
            for system in systems:
                result["cells"].append(run_cell(cfg, model, system, concurrency, running, payloads))
    if cfg.workers_scaling:
        result["workers"] = workers_scaling(cfg, model, repo, work, payloads)
    for name, server in running.items():
        result["servers"][name] = {
            "startup_s": server.startup_s,
            "peak_rss_mb": server.peak_rss_mb,
            "error": server.error,
        }
    return result


def run_cell(
    cfg: Config,
    model: BenchModel,
    system: str,
    concurrency: int,
    running: dict[str, Server],
    payloads: dict[str, Payload],
) -> dict[str, Any]:
    """Verify one request, then load one system at one concurrency."""
    server, payload = endpoint(system, running, payloads)
    cell: dict[str, Any] = {"system": system, "concurrency": concurrency}
    if server.error is not None:
        return {**cell, "error": f"server failed: {server.error}", "rps": 0.0, "errors": -1}
    problem = request_once(server.url, payload, model.output_width)
    if problem is not None:
        return {**cell, "error": f"verification failed: {problem}", "rps": 0.0, "errors": -1}
    try:
        load = run_load(cfg, server.url, payload, concurrency)
    except (subprocess.CalledProcessError, ValueError) as exc:
        return {**cell, "error": f"load generator failed: {exc}", "rps": 0.0, "errors": -1}
    cell.update(load, errors=load["non_2xx"] + load["socket_errors"])
    print(f"  c={concurrency:<3d} {system:11s} {load['rps']:9.1f} req/s", end="")
    print(f"  p50 {load['p50_ms']:8.2f} ms  errors {cell['errors']}")
    return cell


# --------------------------------------------------------------------------- report


def add_ratios(result: dict[str, Any]) -> None:
    """Each cell's items/s as a ratio to (a) batch-32 (and batch-1) and to (b) at the same concurrency."""
    raw = result["raw"]
    floor = {c["concurrency"]: c["rps"] for c in result["cells"] if c["system"] == "floor" and c["rps"] > 0}
    for cell in result["cells"]:
        items = cell["rps"]  # one item per request
        cell["items_per_s"] = items
        cell["ratio_to_raw_b32"] = items / raw["32"]["items_per_s"] if "32" in raw else None
        cell["ratio_to_raw_b1"] = items / raw["1"]["items_per_s"] if "1" in raw else None
        cell["ratio_to_floor"] = items / floor[cell["concurrency"]] if cell["concurrency"] in floor else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """The printed table: one row per (model, concurrency, system), with (a) rows first."""
    head = f"{'model':9s} {'conc':>4s} {'system':15s} {'req/s':>9s} {'items/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
    head += f" {'errors':>6s} {'x(a)b32':>8s} {'x(b)':>6s}"
    lines = [head, "-" * len(head)]
    for name, result in results.items():
        b32 = result["raw"].get("32", {}).get("items_per_s")
        for batch, raw in result["raw"].items():
            lines.append(
                f"{name:9s} {'-':>4s} {LABELS['raw-b' + batch]:15s} {raw['calls'] / raw['seconds']:9.1f}"
                f" {raw['items_per_s']:9.1f} {raw['p50_ms']:8.2f} {raw['p99_ms']:8.2f} {0:6d}"
                f" {_fmt(raw['items_per_s'] / b32 if b32 else None, '8.3g')} {'-':>6s}"
            )
        for cell in result["cells"]:
            lines.append(
                f"{name:9s} {cell['concurrency']:4d} {LABELS[cell['system']]:15s} {_fmt(cell['rps'], '9.1f')}"
                f" {_fmt(cell.get('items_per_s'), '9.1f')} {_fmt(cell.get('p50_ms'), '8.2f')}"
                f" {_fmt(cell.get('p99_ms'), '8.2f')} {cell['errors']:6d}"
                f" {_fmt(cell.get('ratio_to_raw_b32'), '8.3g')} {_fmt(cell.get('ratio_to_floor'), '6.2f')}"
                + (f"  ! {cell['error']}" if cell.get("error") else "")
            )
    return "\n".join(lines)


def server_table(results: dict[str, Any]) -> str:
    """Startup (process start -> first valid response) and peak RSS per server."""
    lines = [f"{'model':9s} {'server':11s} {'startup s':>9s} {'peak RSS MiB':>12s}"]
    for name, result in results.items():
        for server, info in result["servers"].items():
            lines.append(
                f"{name:9s} {server:11s} {_fmt(info['startup_s'], '9.2f')} {_fmt(info['peak_rss_mb'], '12.1f')}"
                + (f"  ! {info['error']}" if info.get("error") else "")
            )
    return "\n".join(lines)


TARGETS = (
    # (model, concurrency, system, baseline, threshold)
    ("mlp", 32, "v2-json", "floor", 1.0),
    ("mlp", 32, "v2-json", "torchserve", 1.3),
    ("mlp", 32, "v2-binary", "floor", 1.3),
    ("resnet18", 32, "v2-binary", "raw-b32", 0.9),
    ("resnet18", 32, "v2-json", "raw-b32", 0.8),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's tracked targets, evaluated where this run measured both sides."""
    out = []
    for model, concurrency, system, baseline, threshold in TARGETS:
        entry: dict[str, Any] = {"model": model, "concurrency": concurrency, "system": system}
        entry.update(baseline=baseline, threshold=threshold, ratio=None, passed=None)
        result = results.get(model)
        if result is not None:
            entry["ratio"] = _ratio(result, concurrency, system, baseline)
            entry["passed"] = None if entry["ratio"] is None else entry["ratio"] >= threshold
        out.append(entry)
    return out


def _ratio(result: dict[str, Any], concurrency: int, system: str, baseline: str) -> float | None:
    rps = {c["system"]: c["rps"] for c in result["cells"] if c["concurrency"] == concurrency and not c.get("error")}
    if baseline == "raw-b32":
        base = result["raw"].get("32", {}).get("items_per_s")
    else:
        base = rps.get(baseline)
    if system not in rps or not base:
        return None
    return float(rps[system] / base)


def target_lines(entries: list[dict[str, Any]]) -> str:
    """PASS/FAIL/SKIP lines."""
    lines = []
    for t in entries:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[t["passed"]]
        measured = "not measured" if t["ratio"] is None else f"{t['ratio']:.3f}x"
        base = "(a) batch-32 items/s" if t["baseline"] == "raw-b32" else LABELS[t["baseline"]]
        lines.append(
            f"{verdict}  {t['model']} c={t['concurrency']}: {LABELS[t['system']]} >= {t['threshold']}x {base}:"
            f" {measured}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,resnet18", help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--concurrency", default="1,8,32", help="comma list of connection counts")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 10, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: ~2 s cells")
    parser.add_argument("--systems", default="raw," + ",".join(SYSTEMS), help="comma list of systems to run")
    parser.add_argument("--threads", type=int, default=1, help="compute threads per runtime (every system alike)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core the servers and (a) are pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="core the load generator is pinned to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--ts-batch-size", type=int, default=64, help="TorchServe batchSize (modelport's default)")
    parser.add_argument("--ts-max-batch-delay-ms", type=int, default=2, help="TorchServe maxBatchDelay")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    parser.add_argument(
        "--workers-scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure modelport --workers 1 vs 2 (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    pin = not args.no_pin and shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    loadgen = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "python")
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}")
    return Config(
        models=args.models.split(","),
        concurrency=[int(c) for c in args.concurrency.split(",")],
        duration=duration,
        raw_duration=duration,
        threads=args.threads,
        server_cpu=args.server_cpu if pin else None,
        client_cpu=args.client_cpu if pin else None,
        loadgen=loadgen,
        ts_batch_size=args.ts_batch_size,
        ts_max_batch_delay_ms=args.ts_max_batch_delay_ms,
        startup_timeout=args.startup_timeout,
        out=args.out,
        systems=args.systems.split(","),
        workers_scaling=args.workers_scaling if args.workers_scaling is not None else not args.quick,
    )


def meta(cfg: Config, argv: list[str] | None) -> dict[str, Any]:
    """What the JSON records about the run itself."""
    import onnxruntime
    import torch

    import modelport

    return {
        "command": " ".join(["benchmarks/serving.py", *(sys.argv[1:] if argv is None else argv)]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadgen": cfg.loadgen,
        "server_cpu": cfg.server_cpu,
        "client_cpu": cfg.client_cpu,
        "duration_s": cfg.duration,
        "concurrency": cfg.concurrency,
        "threads": cfg.threads,
        "torchserve": {"batch_size": cfg.ts_batch_size, "max_batch_delay_ms": cfg.ts_max_batch_delay_ms},
        "versions": {
            "modelport": modelport.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "items_per_request": 1,
    }


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    missing = torchserve_missing()
    if "torchserve" in cfg.systems and missing:
        print(f"skipping TorchServe: {missing}")
        cfg.systems.remove("torchserve")
    print(f"load generator: {cfg.loadgen}; servers on cpu {cfg.server_cpu}, client on cpu {cfg.client_cpu}")
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="modelport-serving-bench-"))
    try:
        for name in cfg.models:
            print(f"\n== {name}")
            model_work = work / name
            model_work.mkdir()
            results[name] = bench_model(cfg, MODELS[name], model_work)
            add_ratios(results[name])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdicts = targets(results)
    report = {"meta": meta(cfg, argv), "models": results, "targets": verdicts}
    if missing:
        report["meta"]["torchserve_skipped"] = missing
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table(results) + "\n\n" + server_table(results) + "\n\n" + target_lines(verdicts))
    for name, result in results.items():
        if result.get("workers"):
            w = result["workers"]
            print(f"{name}: --workers 2 / --workers 1 (v2 binary, c={w['concurrency']}): x{w['scaling']:.2f}")
    print(f"\nload generator: {cfg.loadgen}; results: {cfg.out}")
    failed = any(c.get("error") for r in results.values() for c in r["cells"])
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
