"""KServe v2 gRPC at low concurrency: modelport against grpc's own floors, on the same proto and load.

    python benchmarks/grpc_latency.py [--servers floor-aio,floor-uvloop,floor-sync,floor-ort,modelport] \
        [--concurrency 1,8] [--duration 3] [--rounds 3] [--quick] [--out FILE]

The model is a 16-32-4 MLP (ONNX, batch 1). Each server runs in its own process pinned to the server core:

* ``floor-aio``: a grpc.aio server on asyncio's default loop whose ``ModelInfer`` returns a fixed answer built
  once (the same ``inference.GRPCInferenceService`` messages, no decoding, no model): grpc's own cost;
* ``floor-uvloop``: the same on uvloop (the loop ``modelport serve`` runs on);
* ``floor-sync``: the same fixed answer from grpc's synchronous server (its thread pool, no event loop);
* ``floor-sync-hop``: the sync server whose handler awaits the answer on a uvloop running in another thread (what
  a sync server in front of modelport's asyncio data plane would pay);
* ``floor-ort``: the leanest honest handler on the grpc.aio + uvloop floor: ``raw_input_contents`` decoded with
  numpy, onnxruntime called, the output in ``raw_output_contents`` (no validation, batching or metrics);
* ``modelport``: ``modelport serve`` over the exported model (the KServe v2 gRPC adapter);
* ``modelport-nouvloop``: the same on asyncio's default loop (uvloop hidden from it);
* ``modelport-http``: ``modelport serve`` loaded over KServe v2 HTTP (binary tensors) instead: the gap to close.

The load is tritonclient's own client (gRPC, or HTTP for ``modelport-http``) in its own process pinned to the client
core: at c=1 the synchronous ``InferenceServerClient.infer`` back to back, at c>1 its ``aio`` client with that many
calls in flight. Every
answer is checked. Servers alternate per cell for ``--rounds`` rounds; each cell reports the median of its rounds of
client latency (p50, p99), req/s, the server process's CPU time per request (its threads' run time from
``/proc/PID/task/*/schedstat`` over the cell / requests answered), split by thread: the event loop's (``loop``),
grpc C-core's event-engine threads (``engine``) and the rest (``other``: grpc.aio's completion-queue poller, which
wakes the loop), with the context switches per request, and each server's ratios to ``floor-uvloop``.

Measured 2026-12-06 (2 shared cores, busy; 3 rounds of 3 s): server CPU per request at c=1 floor-uvloop 253 us
(loop 147, event engine 69, poller 37; 21.6 context switches), floor-ort 314, modelport 362 (255 / 69 / 39; 21.8),
modelport-http 184 (1.0 switch); at c=8 170 / 240 / 330 / 115 us. The gRPC gap is grpc's own (README, Performance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from serving_config import add_run_arguments, pinned, run_config, run_meta  # noqa: E402

from modelport.ports import free_port  # noqa: E402

MODEL = "mlp16"
SERVED = "mlp16-onnx"
FLOORS = ("floor-aio", "floor-uvloop", "floor-sync", "floor-sync-hop", "floor-ort")
SERVERS = (*FLOORS, "modelport", "modelport-nouvloop", "modelport-http")
BASE = "floor-uvloop"
THREADS = ("loop", "event_engine", "other")
# ``modelport serve`` runs on uvloop when it can import it: hidden, it runs on asyncio's own loop
MODELPORT = "import runpy; runpy.run_module('modelport', run_name='__main__')"
NO_UVLOOP = f"import sys; sys.modules['uvloop'] = None; {MODELPORT}"
X = np.random.default_rng(0).standard_normal((1, 16), dtype=np.float32)


def export_model(repo: Path) -> Path:
    """The 16-32-4 MLP exported to ONNX into ``repo`` (once); the ONNX file's path."""
    if not (repo / SERVED).is_dir():
        import torch
        from torch import nn

        import modelport

        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
        modelport.export(
            source=net,
            repository=repo,
            name=MODEL,
            formats=("onnx",),
            inputs=(modelport.TensorSpec.parse("x:float32:-1x16"),),
            output_names=("y",),
            quiet=True,
        )
    return repo / SERVED / "1" / "model.onnx"


def servicer(kind: str, model: Path, loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """The floors' ``GRPCInferenceService``: ``ModelInfer`` only, a fixed answer or (``floor-ort``) the model's;
    synchronous for the sync floors, answered on ``loop`` (in its own thread) when one is given."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    fixed = service_pb2.ModelInferResponse(model_name=SERVED, model_version="1")
    fixed.outputs.add(name="y", datatype="FP32", shape=[1, 4])
    fixed.raw_output_contents.append(np.zeros((1, 4), np.float32).tobytes())
    session = None
    if kind == "floor-ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def answer(request: Any) -> Any:
        if session is None:
            return fixed
        tensor = request.inputs[0]
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tuple(tensor.shape))
        (y,) = session.run(["y"], {"x": x})
        reply = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        reply.outputs.add(name="y", datatype="FP32", shape=list(y.shape))
        reply.raw_output_contents.append(y.tobytes())
        return reply

    class Aio(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer(request)

    class Sync(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            if loop is None:
                return answer(request)
            return asyncio.run_coroutine_threadsafe(Aio().ModelInfer(request, context), loop).result()

    return Aio() if kind.startswith("floor-") and not kind.startswith("floor-sync") else Sync()


def serve_floor(kind: str, port: int, model: Path) -> None:
    """Run one floor server on ``127.0.0.1:port`` until killed."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tritonclient.grpc import service_pb2_grpc

    if kind.startswith("floor-sync"):
        loop = None
        if kind == "floor-sync-hop":
            import uvloop

            loop = uvloop.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer(kind, model, loop), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer(kind, model), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    if kind == "floor-aio":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


def client_module(target: str, aio: bool = False) -> tuple[Any, str]:
    """tritonclient's gRPC (``host:port``) or HTTP (``http://host:port``) client module and its address."""
    if target.startswith("http://"):
        import tritonclient.http as th
        import tritonclient.http.aio as tha

        return (tha if aio else th), target.removeprefix("http://")
    import tritonclient.grpc as tg
    import tritonclient.grpc.aio as tga

    return (tga if aio else tg), target


def inputs(module: Any) -> list[Any]:
    item = module.InferInput("x", [1, 16], "FP32")
    item.set_data_from_numpy(X, **({} if "grpc" in module.__name__ else {"binary_data": True}))
    return [item]


def load(target: str, concurrency: int, duration: float) -> dict[str, Any]:
    """tritonclient against ``target`` for ``duration`` s: requests, failures, latency percentiles (ms)."""
    latencies: list[float] = []
    failures = 0
    if concurrency == 1:
        module, address = client_module(target)
        client = module.InferenceServerClient(address)
        items = inputs(module)
        deadline = time.perf_counter() + duration
        while (start := time.perf_counter()) < deadline:
            y = client.infer(SERVED, items).as_numpy("y")
            latencies.append(time.perf_counter() - start)
            failures += y is None or y.shape != (1, 4)
        client.close()
    else:
        latencies, failures = asyncio.run(_load_async(target, concurrency, duration))
    ms = sorted(1000 * t for t in latencies)
    return {
        "requests": len(ms),
        "failures": failures,
        "seconds": duration,
        "p50_ms": ms[len(ms) // 2] if ms else None,
        "p99_ms": ms[int(len(ms) * 0.99)] if ms else None,
    }


async def _load_async(target: str, concurrency: int, duration: float) -> tuple[list[float], int]:
    module, address = client_module(target, aio=True)
    latencies: list[float] = []
    failures = 0
    items = inputs(module)
    client = module.InferenceServerClient(address)
    deadline = time.perf_counter() + duration

    async def caller() -> None:
        nonlocal failures
        while (start := time.perf_counter()) < deadline:
            y = (await client.infer(SERVED, items)).as_numpy("y")
            latencies.append(time.perf_counter() - start)
            failures += y is None or y.shape != (1, 4)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await client.close()
    return latencies, failures


def run_load(cmd: list[str], target: str, concurrency: int, duration: float) -> dict[str, Any]:
    args = [*cmd, "--load", target, str(concurrency), str(duration)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def wait_answering(target: str, timeout: float, log: Path) -> None:
    """One checked ``ModelInfer`` every 0.1 s until one succeeds; exit with the end of the server's ``log`` after
    ``timeout`` seconds."""
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout
    module, address = client_module(target)
    client = module.InferenceServerClient(address)
    try:
        while time.monotonic() < deadline:
            try:
                if client.infer(SERVED, inputs(module)).as_numpy("y") is not None:
                    return
            except (InferenceServerException, OSError):
                time.sleep(0.1)
    finally:
        client.close()
    tail = log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"{target} did not answer within {timeout:g}s; its log ends:\n{tail}")


def threads_snapshot(pid: int) -> dict[str, float]:
    """CPU seconds of the server's threads by group (``/proc/PID/task/*/schedstat``), and its context switches:
    ``loop`` (the main thread: the event loop, or the sync server's accept loop), ``event_engine`` (grpc C-core's
    I/O threads), ``other`` (grpc.aio's completion-queue poller, the sync server's pool, any worker thread)."""
    groups = {"loop": 0.0, "event_engine": 0.0, "other": 0.0, "switches": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError, IndexError, ValueError):
            comm = (task / "comm").read_text().strip()
            group = "loop" if task.name == str(pid) else "event_engine" if comm.startswith("event_engine") else "other"
            groups[group] += int((task / "schedstat").read_text().split()[0]) / 1e9
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    groups["switches"] += int(line.split()[1])
    return groups


def server_command(kind: str, port: int, repo: Path, model: Path) -> tuple[list[str], str]:
    """The command that runs server ``kind`` on ``port``, and the address its load generator is given."""
    if kind in FLOORS:
        return [sys.executable, __file__, "--serve", kind, str(port), str(model)], f"127.0.0.1:{port}"
    cmd = [sys.executable, "-c", NO_UVLOOP if kind == "modelport-nouvloop" else MODELPORT, "serve", str(repo)]
    if kind == "modelport-http":
        return [*cmd, "--http-port", str(port), "--grpc-port", "-1"], f"http://127.0.0.1:{port}"
    return [*cmd, "--http-port", "0", "--grpc-port", str(port)], f"127.0.0.1:{port}"


@contextmanager
def started(kinds: list[str], server_cpu: int | None, repo: Path, work: Path) -> Iterator[dict[str, tuple[Any, str]]]:
    """Each server of ``kinds`` in its own pinned process, answering: kind -> (process, its load's address)."""
    model = export_model(repo)
    procs: dict[str, tuple[Any, str]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        for kind in kinds:
            cmd, target = server_command(kind, free_port(), repo, model)
            with open(work / f"{kind}.log", "wb") as log:
                procs[kind] = (subprocess.Popen(pinned(cmd, server_cpu), env=env, stdout=log, stderr=log), target)
        for kind, (_, target) in procs.items():
            wait_answering(target, 120.0, work / f"{kind}.log")
        yield procs
    finally:
        for proc, _ in procs.values():
            proc.kill()
            proc.wait()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cfg = run_config(args, models=[MODEL], ts_batch_size=1, ts_max_batch_delay_ms=0, out=args.out)
    kinds = [k for k in args.servers.split(",") if k]
    unknown = set(kinds) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    client = pinned([sys.executable, __file__], cfg.client_cpu)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="modelport-grpc-latency-") as work,
        started(kinds, cfg.server_cpu, args.repo or Path(work) / "repo", Path(work)) as procs,
    ):
        for _ in range(cfg.rounds):
            for concurrency in cfg.concurrency:
                for kind, (proc, target) in procs.items():
                    result = measure_cell(client, proc.pid, target, concurrency, cfg.duration)
                    runs.setdefault((kind, concurrency), []).append(result)
    cells = [cell(kind, c, runs) for c in cfg.concurrency for kind in kinds]
    return {"meta": run_meta(cfg, "grpc_latency.py", None), "cells": cells}


def measure_cell(client: list[str], pid: int, target: str, concurrency: int, duration: float) -> dict[str, Any]:
    """One load run against the server ``pid``: the load's result with the server's CPU per request by thread."""
    before = threads_snapshot(pid)
    result = run_load(client, target, concurrency, duration)
    after, requests = threads_snapshot(pid), max(result["requests"], 1)
    for key in THREADS:
        result[f"cpu_us_{key}"] = 1e6 * (after[key] - before[key]) / requests
    result["cpu_us"] = sum(result[f"cpu_us_{key}"] for key in THREADS)
    result["switches"] = (after["switches"] - before["switches"]) / requests
    result["rps"] = result["requests"] / duration
    return result


def cell(kind: str, concurrency: int, runs: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    """One server at one concurrency: the median of its rounds, and its ratios to the base floor's medians."""
    rounds = runs[(kind, concurrency)]
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us", *(f"cpu_us_{key}" for key in THREADS), "switches")
    out: dict[str, Any] = {"server": kind, "concurrency": concurrency}
    out |= {k: statistics.median(r[k] for r in rounds) for k in keys}
    out["failures"] = sum(r["failures"] for r in rounds)
    out["rounds"] = rounds
    base = runs.get((BASE, concurrency))
    if base:
        for k in keys:
            out[f"{k}_vs_{BASE}"] = out[k] / statistics.median(r[k] for r in base)
    return out


def print_cells(cells: list[dict[str, Any]]) -> None:
    head = f"{'server':20s} {'c':>3s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'CPU us/req':>10s}"
    print(f"{head} {'(loop / engine / other)':>24s} {'switches':>8s}  vs {BASE}")
    for c in cells:
        ratio = c.get(f"p50_ms_vs_{BASE}")
        vs = f"p50 {ratio:.2f}x, CPU {c[f'cpu_us_vs_{BASE}']:.2f}x" if ratio else ""
        row = f"{c['server']:20s} {c['concurrency']:3d} {c['rps']:7.0f} {c['p50_ms']:7.3f} {c['p99_ms']:7.3f}"
        split = f"({c['cpu_us_loop']:5.0f} / {c['cpu_us_event_engine']:5.0f} / {c['cpu_us_other']:5.0f})"
        print(f"{row} {c['cpu_us']:10.1f} {split:>24s} {c['switches']:8.1f}  {vs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "the servers")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma list of servers")
    parser.add_argument("--repo", type=Path, default=None, help="where the model is exported (reused when there)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "grpc_latency.json")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=3, metavar=("TARGET", "C", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_floor(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return 0
    if args.load:
        print(json.dumps(load(args.load[0], int(args.load[1]), float(args.load[2]))))
        return 0
    if args.concurrency == "1,8,32":
        args.concurrency = "1,8"
    if args.duration is None:
        args.duration = 1.0 if args.quick else 3.0
    report = measure(args)
    print_cells(report["cells"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
