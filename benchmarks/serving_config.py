"""The serving benchmark's shared pieces: what the run was told, the systems, their labels, pinning."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SYSTEMS = ("floor", "floor-fastapi", "null", "v2-json", "v2-binary", "torchserve", "tfserving", "v2-grpc")
# with --baseline DIR: v2 JSON and binary on a second modelport server run from DIR's checkout (before/after)
BASELINE_SYSTEMS = ("v2-json-base", "v2-binary-base")
# only when --systems names them: v2 JSON on modelport servers with --tracing, every span exported to a local
# OTLP sink, sampling 100% and 1% of requests (parentbased_traceidratio), against v2-json (tracing off); the
# server's exporter process shares its core, or (``-own``) runs on the load generator's core beside the sink, as
# the README advises (a core of its own)
TRACE_SYSTEMS = ("v2-json-trace100", "v2-json-trace100-own", "v2-json-trace1")
# traced server -> (sampling, whether its exporter process leaves the server's core)
TRACE_SAMPLING = {
    "modelport-trace100": (1.0, False),
    "modelport-trace100-own": (1.0, True),
    "modelport-trace1": (0.01, False),
}
LABELS = {
    "raw-b1": "(a) ort b1",
    "raw-b32": "(a) ort b32",
    "floor": "(b) floor",
    "floor-fastapi": "(b2) fastapi",
    "null": "(z) uvicorn null",
    "v2-json": "(c) v2 json",
    "v2-binary": "(d) v2 bin",
    "torchserve": "(e) torchserve",
    "tfserving": "(f) tfs rest",
    "v2-grpc": "(g) v2 grpc",
    "v2-json-base": "(c0) json base",
    "v2-binary-base": "(d0) bin base",
    "v2-json-trace100": "(c1) json tr100",
    "v2-json-trace100-own": "(c3) tr100 own",
    "v2-json-trace1": "(c2) json tr1",
}
# the server process each system is measured on (several systems share one modelport server)
SERVER_OF = {
    "floor": "floor",
    "floor-fastapi": "floor-fastapi",
    "null": "floor-null",
    "v2-json": "modelport",
    "v2-binary": "modelport",
    "tfserving": "modelport",
    "v2-grpc": "modelport",
    "torchserve": "torchserve",
    "v2-json-base": "modelport-base",
    "v2-binary-base": "modelport-base",
    "v2-json-trace100": "modelport-trace100",
    "v2-json-trace100-own": "modelport-trace100-own",
    "v2-json-trace1": "modelport-trace1",
}
PY = sys.executable


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
    rounds: int = 1  # the cells run this many times, interleaved; the report holds the median per cell
    profile: Path | None = None  # py-spy profiles of the modelport server go here
    profile_mode: str = "auto"  # attach (py-spy --pid), launch (server started under py-spy), auto
    baseline: Path | None = None  # a checkout whose modelport the *-base systems run (git worktree, archive)


def add_run_arguments(parser: argparse.ArgumentParser, servers: str = "the servers") -> None:
    """The flags every serving benchmark takes: concurrency, cell length and rounds, threads, where the servers
    and the load generator run, and which load generator; :func:`run_config` reads them."""
    parser.add_argument("--concurrency", default="1,8,32", help="comma list of connection counts")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 10, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: ~2 s cells, one round")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds; report the median per cell (default 3, --quick 1)"
    )
    parser.add_argument("--threads", type=int, default=1, help="compute threads per runtime (every system alike)")
    parser.add_argument("--server-cpu", type=int, default=0, help=f"core {servers} are pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="core the load generator is pinned to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--startup-timeout", type=float, default=180.0)


def run_config(args: argparse.Namespace, **fields: Any) -> Config:
    """The :class:`Config` of :func:`add_run_arguments`' flags and ``fields``. Pinning is off when asked, or
    where taskset or a second core is missing; ``--loadgen auto`` is wrk when installed, else ``loadgen.py``."""
    pin = not args.no_pin and shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    return Config(
        concurrency=[int(c) for c in args.concurrency.split(",")],
        duration=duration,
        raw_duration=duration,
        threads=args.threads,
        server_cpu=args.server_cpu if pin else None,
        client_cpu=args.client_cpu if pin else None,
        loadgen=args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "python"),
        startup_timeout=args.startup_timeout,
        rounds=args.rounds if args.rounds is not None else (1 if args.quick else 3),
        **fields,
    )


def run_meta(cfg: Config, script: str, argv: list[str] | None) -> dict[str, Any]:
    """What every serving benchmark's JSON records about the run: its command, when and where it ran, how."""
    return {
        "command": " ".join([f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadgen": cfg.loadgen,
        "server_cpu": cfg.server_cpu,
        "client_cpu": cfg.client_cpu,
        "duration_s": cfg.duration,
        "rounds": cfg.rounds,
        "concurrency": cfg.concurrency,
        "threads": cfg.threads,
    }


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` (unchanged when pinning is off)."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def thread_env(cfg: Config) -> dict[str, str]:
    """What every server adds to the environment: its compute threads (one each: they share one core)."""
    return {"OMP_NUM_THREADS": str(cfg.threads or 1), "MODELPORT_BENCH_THREADS": str(cfg.threads)}


def base_env(cfg: Config) -> dict[str, str]:
    """The environment every server gets: this one with :func:`thread_env`."""
    return {**os.environ, **thread_env(cfg)}
