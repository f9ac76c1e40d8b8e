"""Serving shoot-out: modelport's server against the raw runtime, a minimal Starlette floor and TorchServe.

    python benchmarks/serving.py [--models mlp,resnet18] [--concurrency 1,8,32] [--duration 10] [--rounds 3]
                                 [--quick] [--out benchmarks/results/serving.json]

Systems, measured side by side in one run (servers pinned to one core, the load generator to another):

* (a) ``raw``: onnxruntime ``session.run`` in-process at batch 1 and 32 -- the limit;
* (b) ``floor``: the leanest honest handler, bare Starlette on uvicorn (httptools, uvloop), orjson in,
  onnxruntime, orjson out, no batching -- the Python floor every ``x(b)`` ratio and target is against;
* (b2) ``floor-fastapi``: the same handler as a FastAPI route (what the framework costs);
* (z) ``null``: uvicorn's ceiling, a pure ASGI app that reads the body and sends a response computed once
  (no parsing, no model): what no handler on uvicorn can beat on this machine;
* (c) ``v2-json``: ``modelport serve`` over the ONNX export, KServe v2 JSON;
* (d) ``v2-binary``: the same server, KServe v2 binary tensor extension (binary in and out);
* (e) ``torchserve``: TorchServe 0.12 over the TorchScript export, with its dynamic batching on;
* (f) ``tfserving``: the modelport server, TF Serving REST ``POST /v1/models/{m}:predict`` (``instances``);
* (g) ``v2-grpc``: the modelport server, KServe v2 gRPC ``ModelInfer`` (raw_input_contents), loaded by
  ``grpc_loadgen.py`` (grpc.aio, N calls in flight on one channel, pinned like the HTTP load generators);
* (c0)/(d0) ``v2-json-base``, ``v2-binary-base`` (with ``--baseline DIR``): (c) and (d) on a second modelport
  server run from another checkout (``git worktree add DIR main``, or ``git archive main | tar -x -C DIR``),
  measured in the same interleaved rounds: a change's before/after, printed as after/before ratios.
* (c1)/(c2) ``v2-json-trace100``, ``v2-json-trace1`` (only when ``--systems`` names them): (c) on a second and
  a third modelport server started with ``--tracing``, sampling 100% and 1% of requests
  (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``), each exporting over OTLP/HTTP to its own local sink
  (``otlp_sink.py``, pinned to the load generator's core); printed as ratios to (c), tracing off, in the same
  run, with the spans each sink received. The exporter process each traced server starts shares the server's
  core; (c3) ``v2-json-trace100-own`` is (c1) with its exporter process moved to the load generator's core
  (beside the sink), the placement the README advises: a core of its own. On a 2-core machine that core also
  runs the load generator and the sink, and can become what limits (c3)'s req/s: each traced line also gives
  the server process's own CPU time per request (its exporter process left out) and the capacity it leaves
  its core, off's CPU per request over the traced server's.

Every request carries one item. All servers are started (one at a time, so each startup is timed alone)
before any load, then the cells run in ``--rounds`` interleaved rounds (for each round, for each
concurrency, every system in turn) so machine noise hits them alike; each cell reports its median req/s,
p50 and p99 over the rounds, and keeps every round. A target between two servers (req/s, p99) is judged round
by round when every round of both ran: the median of each round's ratio, its two runs seconds apart, which a
host whose speed drifts from minute to minute moves less than the medians of runs minutes apart; the traced
lines give both. HTTP load comes from ``wrk`` (``-t1 --latency`` with
``post.lua``) or, when wrk is not installed, from the built-in asyncio generator ``loadgen.py``; every
cell's JSON says which (``loadgen``). Results are printed as a table and written as JSON; the project's
targets are printed as PASS/FAIL lines (informational: the exit status is non-zero only when a system
could not be started or answered wrongly).

Memory (``serving_memory.py``): during every cell the PSS of the server's process tree is sampled every 50 ms
(``/proc/PID/smaps_rollup``); a cell reports the highest sample (the highest of its rounds) and its ratio to
(b)'s, the server table each server's PSS once started (idle) and its peak over the cells, next to the peak
RSS (VmHWM). Systems that share the modelport server share its memory: a cell's peak includes whatever an
earlier cell left there. Servers run side by side, so shared library pages are split between them in PSS.

``--profile DIR`` also records py-spy profiles of the modelport server under load (``serving_profile.py``;
``make profile`` does it for the MLP at c=32, v2 JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_models import MODELS, BenchModel, build  # noqa: E402
from serving_config import (  # noqa: E402
    BASELINE_SYSTEMS,
    SERVER_OF,
    SYSTEMS,
    TRACE_SYSTEMS,
    Config,
    add_run_arguments,
    run_config,
    run_meta,
)
from serving_load import Payload, request_once, run_load, run_raw, write_payloads  # noqa: E402
from serving_memory import PssSampler  # noqa: E402
from serving_procs import Server, cpu_seconds, modelport_server, servers, settle, wait_valid  # noqa: E402
from serving_profile import profile_model  # noqa: E402
from serving_report import (  # noqa: E402
    add_ratios,
    baseline_lines,
    median_cell,
    median_raw,
    profile_lines,
    server_table,
    table,
    target_lines,
    targets,
    tracing_lines,
)

from modelport.torchserve_process import torchserve_missing  # noqa: E402


def workers_scaling(
    cfg: Config, model: BenchModel, repo: Path, work: Path, payloads: dict[str, Payload]
) -> dict[str, Any]:
    """v2 binary at the highest concurrency with ``--workers 1`` and ``--workers 2``, servers unpinned.

    On a 2-core machine the load generator shares the cores with the workers, so this understates
    what a second worker gives on a bigger host; it shows that the workers really share the load."""
    concurrency = max(cfg.concurrency)
    rps: dict[str, float] = {}
    for workers in (1, 2):
        with modelport_server(cfg, model, repo, work, workers=workers) as server:
            wait_valid(server, payloads["v2-binary"], cfg.startup_timeout)
            if server.error is not None:
                print(f"  modelport --workers {workers}: {server.error}")
                return {"concurrency": concurrency, "rps": rps, "scaling": None, "error": server.error}
            rps[str(workers)] = float(run_load(cfg, server.url, None, payloads["v2-binary"], concurrency)["rps"])
    print(f"  workers 1 -> 2 (v2 binary, c={concurrency}): {rps['1']:.0f} -> {rps['2']:.0f} req/s")
    return {"concurrency": concurrency, "rps": rps, "scaling": rps["2"] / rps["1"] if rps["1"] else None}


def endpoint(system: str, running: dict[str, Server], payloads: dict[str, Payload]) -> tuple[Server, Payload]:
    """The server and payload a system is measured with."""
    return running[SERVER_OF[system]], payloads[system]


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
        print(f"  raw onnxruntime, {cfg.raw_duration:g}s per batch size, {cfg.rounds} round(s)")
        result["raw"] = median_raw([run_raw(cfg, model, repo) for _ in range(cfg.rounds)])
    systems = [s for s in (*SYSTEMS, *BASELINE_SYSTEMS, *TRACE_SYSTEMS) if s in cfg.systems]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with servers(cfg, model, repo, work, payloads) as running:
        for round_ in range(1, cfg.rounds + 1):
            print(f"  round {round_} of {cfg.rounds}")
            for concurrency in cfg.concurrency:
                for system in systems:
                    cell = run_cell(cfg, system, concurrency, running, payloads)
                    runs.setdefault((concurrency, system), []).append(cell)
        if cfg.profile is not None:
            result["profile"] = profile_model(cfg, model, repo, work, running, payloads)
    result["cells"] = [median_cell(runs[(c, s)]) for c in cfg.concurrency for s in systems]
    if cfg.workers_scaling:
        result["workers"] = workers_scaling(cfg, model, repo, work, payloads)
    for name, server in running.items():
        measured = [c["peak_pss_mb"] for c in result["cells"] if SERVER_OF[c["system"]] == name and "peak_pss_mb" in c]
        if measured and server.idle_pss_mb is not None:  # PSS falls as other processes map the same pages
            measured.append(server.idle_pss_mb)
        result["servers"][name] = {
            "startup_s": server.startup_s,
            "peak_rss_mb": server.peak_rss_mb,
            "idle_pss_mb": server.idle_pss_mb,
            "peak_pss_mb": max(measured, default=None),
            "error": server.error,
        }
        if server.sink is not None:
            result["servers"][name]["spans_exported"] = server.spans_exported
    return result


def run_cell(
    cfg: Config, system: str, concurrency: int, running: dict[str, Server], payloads: dict[str, Payload]
) -> dict[str, Any]:
    """Once every server is idle, verify one request, then load one system at one concurrency, sampling its
    server's PSS meanwhile."""
    server, payload = endpoint(system, running, payloads)
    cell: dict[str, Any] = {"system": system, "concurrency": concurrency}
    if server.error is not None:
        return {**cell, "error": f"server failed: {server.error}", "rps": 0.0, "errors": -1}
    settle(running.values())
    problem = request_once(server.url, server.grpc, payload)
    if problem is not None:
        return {**cell, "error": f"verification failed: {problem}", "rps": 0.0, "errors": -1}
    cpu_before, own_before = cpu_seconds(server.proc.pid), cpu_seconds(server.proc.pid, tree=False)
    try:
        with PssSampler(server.proc.pid) as memory:
            load = run_load(cfg, server.url, server.grpc, payload, concurrency)
    except subprocess.CalledProcessError as exc:
        return {**cell, "error": f"load generator failed: {exc}: {exc.stderr[-500:]}", "rps": 0.0, "errors": -1}
    except ValueError as exc:
        return {**cell, "error": f"load generator failed: {exc}", "rps": 0.0, "errors": -1}
    cpu_us = 1e6 * (cpu_seconds(server.proc.pid) - cpu_before) / max(load["requests"], 1)
    own_cpu_us = 1e6 * (cpu_seconds(server.proc.pid, tree=False) - own_before) / max(load["requests"], 1)
    cell.update(load, errors=load["non_2xx"] + load["socket_errors"], peak_pss_mb=memory.peak_mb, cpu_us=cpu_us)
    cell["own_cpu_us"] = own_cpu_us  # the server process alone (a traced server's exporter process left out)
    print(f"  c={concurrency:<3d} {system:13s} {load['rps']:9.1f} req/s  {cpu_us:6.1f} CPU us/req", end="")
    print(f"  p50 {load['p50_ms']:8.2f} ms  peak PSS {memory.peak_mb:6.1f} MiB  errors {cell['errors']}")
    return cell


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,resnet18", help=f"comma list of {sorted(MODELS)}")
    add_run_arguments(parser, servers="the servers and (a)")
    parser.add_argument("--systems", default="raw," + ",".join(SYSTEMS), help="comma list of systems to run")
    parser.add_argument("--ts-batch-size", type=int, default=64, help="TorchServe batchSize (modelport's default)")
    parser.add_argument("--ts-max-batch-delay-ms", type=int, default=2, help="TorchServe maxBatchDelay")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="py-spy profiles of the modelport server"
    )
    parser.add_argument(
        "--profile-mode",
        choices=("auto", "attach", "launch"),
        default="auto",
        help="attach to the running server, or start one under py-spy (auto: attach when py-spy can)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run v2-json-base and v2-binary-base on a modelport server from this checkout (before/after)",
    )
    parser.add_argument(
        "--workers-scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure modelport --workers 1 vs 2 (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}")
    systems = args.systems.split(",")
    if args.baseline is None:
        systems = [s for s in systems if s not in BASELINE_SYSTEMS]
    elif not (args.baseline / "modelport" / "__init__.py").exists():
        parser.error(f"--baseline {args.baseline} is not a modelport checkout")
    else:  # each of v2-json and v2-binary asked for is also measured on the baseline
        systems += [f"{s}-base" for s in ("v2-json", "v2-binary") if s in systems and f"{s}-base" not in systems]
    return run_config(
        args,
        models=args.models.split(","),
        ts_batch_size=args.ts_batch_size,
        ts_max_batch_delay_ms=args.ts_max_batch_delay_ms,
        out=args.out,
        systems=systems,
        workers_scaling=args.workers_scaling if args.workers_scaling is not None else not args.quick,
        profile=args.profile,
        profile_mode=args.profile_mode,
        baseline=args.baseline,
    )


def meta(cfg: Config, argv: list[str] | None) -> dict[str, Any]:
    """What the JSON records about the run itself."""
    import onnxruntime
    import torch

    import modelport
    from modelport.serving import native

    return {
        **run_meta(cfg, "serving.py", argv),
        "native": native.active(),  # this checkout's servers run the compiled hot path (make native)
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
    from modelport.serving import native

    print(f"modelport's hot path: {'compiled (build/native)' if native.active() else 'Python sources'}")
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
    if before_after := baseline_lines(results):
        print("\n" + before_after)
    if traced := tracing_lines(results):
        print("\n" + traced)
    for name, result in results.items():
        if result.get("workers"):
            w = result["workers"]
            scaling = f"x{w['scaling']:.2f}" if w["scaling"] else f"not measured ({w.get('error', 'no load')})"
            print(f"{name}: --workers 2 / --workers 1 (v2 binary, c={w['concurrency']}): {scaling}")
    if profiles := profile_lines(results):
        print("\n" + profiles)
    print(f"\nload generator: {cfg.loadgen}; results: {cfg.out}")
    failed = any(c.get("error") for r in results.values() for c in r["cells"])
    failed |= any(r.get("workers", {}).get("error") for r in results.values())
    failed |= any(_profile_failed(r.get("profile")) for r in results.values())
    return 2 if failed else 0


def _profile_failed(profile: dict[str, Any] | None) -> bool:
    return profile is not None and bool(profile.get("error") or any(f.get("error") for f in profile["files"]))


if __name__ == "__main__":
    sys.exit(main())
