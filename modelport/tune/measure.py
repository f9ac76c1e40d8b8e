"""Measure one candidate: serve it alone, pinned to the tune's CPUs, and climb a concurrency sweep.

Each candidate gets a fresh ``modelport serve`` (the one launcher, under ``taskset``) over a staged
repository holding only its variant and its ``config.yaml``. The requests are the exact bytes
``modelport.loadtest`` encodes for the protocol (one pre-flight request checks them). The sweep stops
after two levels in a row miss an SLO or three add no throughput; every level records the
generator's and the server's CPU use (``/proc``) so a ceiling the generator set is called out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelport.errors import ModelportError
from modelport.launcher import Launched, LaunchOptions, launched
from modelport.loadtest.compare_result import request_specs
from modelport.loadtest.options import LoadTestOptions
from modelport.loadtest.results import PERCENTILES
from modelport.loadtest.runner import prepare
from modelport.ports import free_port
from modelport.serving.settings import CONFIG_FILE, ModelConfig
from modelport.tune.loadgen import LoadResult, LoadSpec, generate, request_bytes
from modelport.tune.options import TuneOptions
from modelport.tune.procstat import peak_rss_mb, tree
from modelport.tune.result import LOADGEN_BOUND, LevelPoint, Measurement
from modelport.tune.space import Candidate, Space

__all__ = ["Bench", "measure"]

_FLAT = 1.05  # a level must beat the best so far by 5% to count as growth
_FLAT_LEVELS = 3  # levels in a row without growth that end a sweep (fewer: noise ends it early)
_IDLE = 0.6  # a flat server using less than this share of its CPUs was not the limit


@dataclass(frozen=True)
class Bench:
    """Where and how candidates are measured: the options, the space, the generator's CPUs, a printer."""

    options: TuneOptions
    space: Space
    loadgen_cpus: tuple[int, ...]  # CPUs not given to the server (empty: the generator shares them)
    say: Callable[[str], None] = print


def measure(candidate: Candidate, bench: Bench) -> Measurement:
    """Serve ``candidate`` and sweep it; a server that fails to start or dies is recorded, not raised."""
    started = time.monotonic()
    slug = hashlib.sha1(candidate.key.encode()).hexdigest()[:10]
    (bench.options.out / "logs").mkdir(parents=True, exist_ok=True)
    log = bench.options.out / "logs" / f"{slug}.log"
    try:
        stage = _stage(candidate, bench)
        with launched(stage, *_flags(candidate), options=_launch(candidate, bench, log)) as server:
            requests = _requests(server, candidate, bench)
            levels, notes = _sweep(server, requests, bench)
            rss = peak_rss_mb(tree(server.process.pid))
    except (ModelportError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, ModelportError) else str(exc)
        return Measurement(candidate, error=message.strip() or "failed", wall_s=time.monotonic() - started)
    crashed = _crash(levels, server)
    return Measurement(candidate, tuple(levels), rss, crashed, time.monotonic() - started, tuple(notes))


def _crash(levels: list[LevelPoint], server: Launched) -> str:
    code = server.process.returncode
    if code in (0, None) or not levels or levels[-1].requests:
        return ""
    return f"the server exited with {code} during the sweep (users={levels[-1].users})"


def _flags(candidate: Candidate) -> tuple[str, ...]:
    return ("--log-level", "warning", "--workers", str(candidate.workers))


def _launch(candidate: Candidate, bench: Bench, log: Path) -> LaunchOptions:
    """Pinned with taskset; ``--workers`` needs a fixed port, chosen free here below the kernel's ephemeral range."""
    port = free_port() if candidate.workers > 1 else 0
    prefix = ("taskset", "-c", bench.options.cpu_list) if shutil.which("taskset") else ()
    return LaunchOptions(http_port=port, grpc_port=-1, log=log, timeout_s=120, command_prefix=prefix)


def _stage(candidate: Candidate, bench: Bench) -> Path:
    """A repository of the variant's latest version (hard links) and the candidate's config.yaml."""
    variant = bench.space.variants[candidate.variant]
    staging = bench.options.out / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / variant.name
    shutil.copytree(variant.version_dir, target / str(variant.version), copy_function=_link_or_copy)
    config = {**base_config(variant.directory), **candidate.config}
    ModelConfig.model_validate(config)
    (target / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return staging


def base_config(directory: Path) -> dict[str, Any]:
    """The model's own config.yaml as written (keys the tune does not touch are kept)."""
    path = directory / CONFIG_FILE
    data: Any = yaml.safe_load(path.read_text()) if path.exists() else {}
    return dict(data or {})


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _requests(server: Launched, candidate: Candidate, bench: Bench) -> tuple[bytes, ...]:
    """The protocol's request bytes from ``modelport.loadtest`` (its codec, its pre-flight check)."""
    out = bench.options.out / "payloads" / candidate.variant
    out.mkdir(parents=True, exist_ok=True)
    inputs = request_specs(bench.space.variants[candidate.variant])
    options = LoadTestOptions(
        url=server.url,
        model=candidate.variant,
        protocol=bench.options.protocol,
        out=out,
        inputs=inputs,
        data=bench.options.data,
    )
    prepared = prepare(options)
    if prepared.plan is None:
        raise ModelportError("no request plan")
    plan = json.loads(prepared.plan.read_text())
    with np.load(plan["payloads"]) as stored:
        bodies = [stored[f"body{i}"].tobytes() for i in range(len(plan["payload_headers"]))]
    return tuple(
        request_bytes("127.0.0.1", server.http_port, plan["path"], body, {**plan["headers"], **extra})
        for body, extra in zip(bodies, plan["payload_headers"], strict=True)
    )


def _sweep(server: Launched, requests: tuple[bytes, ...], bench: Bench) -> tuple[list[LevelPoint], list[str]]:
    """Climb the levels until two in a row miss an SLO (one may be noise) or three in a row add nothing."""
    levels: list[LevelPoint] = []
    flat = missed = 0
    for users in bench.options.levels:
        point = _level(server, requests, users, bench)
        levels.append(point)
        if server.process.poll() is not None:
            break
        missed = 0 if point.passed else missed + 1
        best = max((lv.rps for lv in levels[:-1] if lv.passed), default=0.0)
        flat = flat + 1 if point.passed and point.rps < best * _FLAT else 0
        if missed >= 2 or flat >= _FLAT_LEVELS:
            break
    return levels, _notes(levels, bench)


def _level(server: Launched, requests: tuple[bytes, ...], users: int, bench: Bench) -> LevelPoint:
    opts = bench.options
    pids = tuple(tree(server.process.pid))
    spec = LoadSpec("127.0.0.1", server.http_port, requests, users, opts.level_s, opts.warmup_s, pids, opts.cpus)
    result = generate(spec, bench.loadgen_cpus)
    point = _point(users, result)
    return dataclasses.replace(point, slos=tuple(slo.check(point.measured()) for slo in opts.parsed_slos))


def _point(users: int, result: LoadResult) -> LevelPoint:
    done = np.asarray(result.latencies_ms, dtype=np.float64)
    total = len(done) + result.errors
    if len(done):
        latency = {name: float(np.percentile(done, q)) for name, q in PERCENTILES.items()}
        latency.update(mean=float(done.mean()), max=float(done.max()))
    else:
        latency = dict.fromkeys((*PERCENTILES, "mean", "max"), float("inf"))
    return LevelPoint(
        users=users,
        rps=len(done) / result.window_s if result.window_s > 0 else 0.0,
        latency_ms=latency,
        error_rate=result.errors / total if total else 1.0,
        requests=len(done),
        loadgen_cpu=result.loadgen_cpu,
        server_cpu=result.server_cpu,
        cpus_busy=result.cpus_busy,
    )


def _notes(levels: list[LevelPoint], bench: Bench) -> list[str]:
    """Say when the ceiling may not be the server's: a busy generator, or a flat curve over an idle server."""
    notes = []
    busy = [lv.users for lv in levels if lv.loadgen_cpu >= LOADGEN_BOUND]
    if busy:
        notes.append(
            f"the load generator used a full core at users={busy[0]}: the ceiling may be its, not the server's"
        )
    top = max(levels, key=lambda lv: lv.rps, default=None)
    cpus = len(bench.options.cpus)
    if top is not None and top.server_cpu is not None and levels[-1].passed and top.server_cpu < _IDLE * cpus:
        shared = top.cpus_busy is not None and top.cpus_busy >= 0.9
        why = (
            f"its CPUs were {100 * (top.cpus_busy or 0):.0f}% busy: other processes (the load generator included) "
            "took the rest"
            if shared
            else "not a CPU ceiling (a lock, the network stack or the load generator)"
        )
        notes.append(
            f"throughput stopped growing at {top.rps:.0f} req/s while the server used {top.server_cpu:.2f} of "
            f"{cpus} CPU(s): {why}"
        )
    return notes
