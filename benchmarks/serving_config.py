"""The serving benchmark's shared pieces: what the run was told, the systems, their labels, pinning."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SYSTEMS = ("floor", "floor-fastapi", "null", "v2-json", "v2-binary", "torchserve", "tfserving", "v2-grpc")
# with --baseline DIR: v2 JSON and binary on a second modelport server run from DIR's checkout (before/after)
BASELINE_SYSTEMS = ("v2-json-base", "v2-binary-base")
# only when --systems names them: v2 JSON on modelport servers with --tracing, every span exported to a local
# OTLP sink, sampling 100% and 1% of requests (parentbased_traceidratio), against v2-json (tracing off)
TRACE_SYSTEMS = ("v2-json-trace100", "v2-json-trace1")
TRACE_SAMPLING = {"modelport-trace100": 1.0, "modelport-trace1": 0.01}
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


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` (unchanged when pinning is off)."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def thread_env(cfg: Config) -> dict[str, str]:
    """What every server adds to the environment: its compute threads (one each: they share one core)."""
    return {"OMP_NUM_THREADS": str(cfg.threads or 1), "MODELPORT_BENCH_THREADS": str(cfg.threads)}


def base_env(cfg: Config) -> dict[str, str]:
    """The environment every server gets: this one with :func:`thread_env`."""
    return {**os.environ, **thread_env(cfg)}
