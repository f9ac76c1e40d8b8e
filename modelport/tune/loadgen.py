"""The tuner's load generator: closed-loop keep-alive HTTP/1.1 from asyncio, one process per share of the load.

Why not locust: a tune measures dozens of sweep levels of a few seconds each, and locust takes
about a second to start per level and spends far more CPU per request (gevent, its stats). This
generator replays the exact request bytes ``modelport.loadtest`` encodes for the protocol; each
process reports its own CPU time over the measured window, so the tuner can tell when the
generator, not the server, was the ceiling. Requests completing in the first ``warmup_s`` are not
counted. It imports only the standard library and runs as a script (``python loadgen.py SPEC OUT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoadResult", "LoadSpec", "generate"]


@dataclass(frozen=True)
class LoadSpec:
    """``connections`` keep-alive connections to ``host:port``, each POSTing the bodies round-robin."""

    host: str
    port: int
    requests: tuple[bytes, ...]  # whole requests: head and body
    connections: int
    duration_s: float
    warmup_s: float
    watch_pids: tuple[int, ...] = ()  # the server's processes: their CPU time over the window
    watch_cpus: tuple[int, ...] = ()  # the server's CPUs: how busy they were (anything running on them)


@dataclass(frozen=True)
class LoadResult:
    """What the generator measured after its warm-up: latencies (ms), errors, its own CPU use."""

    latencies_ms: list[float]
    errors: int
    window_s: float
    loadgen_cpu: float  # the busiest generator process's CPU seconds per second of the window (1.0 = one core)
    processes: int
    server_cpu: float | None  # the watched processes' CPU seconds per second of the window
    cpus_busy: float | None  # the watched CPUs' busy share over the window (0..1)


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One whole HTTP/1.1 POST."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def generate(spec: LoadSpec, cpus: tuple[int, ...] = ()) -> LoadResult:
    """Run the load in ``max(1, len(cpus))`` processes (pinned to ``cpus`` when given) and merge their results."""
    processes = max(1, min(len(cpus), spec.connections)) if cpus else 1
    with tempfile.TemporaryDirectory(prefix="modelport-loadgen-") as scratch:
        bodies = Path(scratch) / "requests.bin"
        bodies.write_bytes(b"".join(spec.requests))
        running = []
        for i in range(processes):
            share = spec.connections // processes + (i < spec.connections % processes)
            plan = {**_plan(spec, bodies), "connections": share}
            plan_file, out_file = Path(scratch) / f"plan{i}.json", Path(scratch) / f"out{i}.json"
            plan_file.write_text(json.dumps(plan))
            pin = {cpus[i]} if cpus else None
            command = [sys.executable, "-S", __file__, str(plan_file), str(out_file)]
            running.append((_start(command, pin), out_file))
        results = [_finish(process, out, spec.duration_s) for process, out in running]
    return LoadResult(
        latencies_ms=[x for r in results for x in r["latencies_ms"]],
        errors=sum(int(r["errors"]) for r in results),
        window_s=max(float(r["window_s"]) for r in results),
        loadgen_cpu=max(float(r["cpu_s"]) / max(float(r["window_s"]), 1e-9) for r in results),
        processes=processes,
        server_cpu=results[0]["server_cpu"],
        cpus_busy=results[0]["cpus_busy"],
    )


def _plan(spec: LoadSpec, bodies: Path) -> dict[str, Any]:
    return {
        "host": spec.host,
        "port": spec.port,
        "bodies": str(bodies),
        "sizes": [len(r) for r in spec.requests],
        "duration_s": spec.duration_s,
        "warmup_s": spec.warmup_s,
        "watch_pids": list(spec.watch_pids),
        "watch_cpus": list(spec.watch_cpus),
    }


def _start(command: list[str], pin: set[int] | None) -> subprocess.Popen[bytes]:
    def pinned() -> None:
        if pin:
            os.sched_setaffinity(0, pin)

    return subprocess.Popen(command, preexec_fn=pinned, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen[bytes], out: Path, duration_s: float) -> dict[str, Any]:
    try:
        _, stderr = process.communicate(timeout=duration_s + 30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError("the load generator did not finish") from None
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"the load generator failed: {stderr.decode(errors='replace')[-500:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _pids_cpu_s(pids: list[int]) -> float | None:
    """utime + stime of the processes, in seconds (None without /proc)."""
    total, seen = 0.0, False
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        seen = True
    return total if seen else None


def _cpus_ticks(cpus: list[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies of the CPUs since boot, from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    wanted = {f"cpu{c}" for c in cpus}
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            ticks = [int(v) for v in values[:8]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return (busy, total) if total else None


def _watch(plan: dict[str, Any]) -> tuple[float | None, tuple[int, int] | None]:
    return _pids_cpu_s(plan["watch_pids"]), _cpus_ticks(plan["watch_cpus"])


def _watched(
    before: tuple[float | None, tuple[int, int] | None], window: float, plan: dict[str, Any]
) -> dict[str, Any]:
    """The server's CPU use and its CPUs' busy share between ``before`` and now."""
    after = _watch(plan)
    server = after[0] - before[0] if after[0] is not None and before[0] is not None else None
    busy = None
    if after[1] is not None and before[1] is not None and after[1][1] > before[1][1]:
        busy = (after[1][0] - before[1][0]) / (after[1][1] - before[1][1])
    return {"server_cpu": server / window if server is not None else None, "cpus_busy": busy}


async def _read_status(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked) and return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, chunked = int(head.split(b" ", 2)[1]), 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readexactly(2)
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(plan: dict[str, Any], requests: list[bytes], offset: int, tally: dict[str, Any]) -> None:
    """One keep-alive connection sending requests back to back until the end (reconnecting after errors)."""
    start, end, index = tally["start"], tally["end"], offset
    while time.perf_counter() < end:
        try:
            reader, writer = await asyncio.open_connection(plan["host"], plan["port"])
        except OSError:
            tally["errors"] += time.perf_counter() >= start
            await asyncio.sleep(0.05)
            continue
        with contextlib.closing(writer):
            try:
                while (sent := time.perf_counter()) < end:
                    writer.write(requests[index % len(requests)])
                    index += 1
                    status = await _read_status(reader)
                    done = time.perf_counter()
                    if done >= start and done < end:
                        tally["latencies"].append((done - sent) * 1000 if status == 200 else None)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally["errors"] += time.perf_counter() >= start


async def _run(plan: dict[str, Any]) -> dict[str, Any]:
    raw = Path(plan["bodies"]).read_bytes()
    requests, at = [], 0
    for size in plan["sizes"]:
        requests.append(raw[at : at + size])
        at += size
    began = time.perf_counter()
    tally: dict[str, Any] = {"start": began + plan["warmup_s"], "end": began + plan["duration_s"]}
    tally.update(latencies=[], errors=0)
    tasks = [asyncio.create_task(_connection(plan, requests, i, tally)) for i in range(plan["connections"])]
    await asyncio.sleep(max(0.0, tally["start"] - time.perf_counter()))
    cpu, watched = time.process_time(), _watch(plan)
    await asyncio.sleep(max(0.0, tally["end"] - time.perf_counter()))
    cpu = time.process_time() - cpu
    server = _watched(watched, tally["end"] - tally["start"], plan)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [x for x in tally["latencies"] if x is not None]
    errors = tally["errors"] + sum(x is None for x in tally["latencies"])
    window = tally["end"] - tally["start"]
    return {"latencies_ms": latencies, "errors": errors, "window_s": window, "cpu_s": cpu, **server}


if __name__ == "__main__":
    result = asyncio.run(_run(json.loads(Path(sys.argv[1]).read_text())))
    Path(sys.argv[2]).write_text(json.dumps(result))
