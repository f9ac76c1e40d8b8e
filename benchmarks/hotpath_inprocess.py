"""The inference hot path in process: CPU microseconds per request, without HTTP or a load generator.

Drives the HTTP port's ASGI app (``serving/rest.py``'s ``create_app``: the inference front, a real data
plane, batcher and onnxruntime session over the serving benchmark's MLP) with fake ``receive``/``send``
from ``concurrency`` tasks at once, and reports the process's CPU time per request for KServe v2 JSON,
v2 binary, TF Serving REST and TorchServe predictions. No sockets, no uvicorn, no wrk: what it measures
is modelport's own Python (and the model), so it is far steadier than ``serving.py`` on a shared machine.

    python benchmarks/hotpath_inprocess.py [--requests 20000] [--concurrency 1,32] [--rounds 3]
        [--protocols v2-json,v2-binary,tfserving,torchserve] [--profile v2-json] [--repo DIR] [--checkout DIR]

The process pins itself to one CPU (as ``serving.py`` pins the server), so batches of a small model run
on the event loop; ``--no-pin`` keeps every CPU. ``--profile P`` prints cProfile's top functions for
protocol P at the highest concurrency instead of timing. ``--checkout DIR`` runs another checkout's modelport
(the code before a change, for before/after ratios: alternate the two runs, the machine's noise drifts).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

MODEL = "mlp"
SERVED = "mlp-onnx"


def export_mlp(repo: Path) -> None:
    """The serving benchmark's MLP exported to ONNX into ``repo`` (skipped when already there)."""
    if (repo / SERVED).is_dir():
        return
    from bench_models import build

    import modelport

    modelport.export(
        source=build(MODEL),
        repository=repo,
        name=MODEL,
        formats=("onnx",),
        inputs=(modelport.TensorSpec.parse("x:float32:-1x64"),),
        output_names=("y",),
        quiet=True,
    )


def requests() -> dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]]:
    """(path, headers, body) of one item for every protocol, as ``serving_load.write_payloads`` sends it."""
    x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    item = {"name": "x", "shape": [1, 64], "datatype": "FP32"}
    json_body = orjson.dumps({"inputs": [{**item, "data": x.ravel()}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    header = orjson.dumps(
        {"inputs": [{**item, "parameters": {"binary_data_size": x.nbytes}}], "parameters": {"binary_data_output": True}}
    )
    as_json = [(b"content-type", b"application/json")]
    binary = [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", b"%d" % len(header))]
    v2 = f"/v2/models/{SERVED}/infer"
    return {
        "v2-json": (v2, as_json, json_body),
        "v2-binary": (v2, binary, header + x.astype("<f4").tobytes()),
        "tfserving": (f"/v1/models/{SERVED}:predict", as_json, orjson.dumps({"instances": x.tolist()})),
        "torchserve": (f"/predictions/{SERVED}", as_json, orjson.dumps(x.tolist())),
    }


async def drive(app: Any, request: tuple[str, list[tuple[bytes, bytes]], bytes], concurrency: int, total: int) -> None:
    """``total`` requests through ``app`` from ``concurrency`` tasks; fails on any status but 200."""
    path, headers, body = request
    each = total // concurrency
    message = {"type": "http.request", "body": body, "more_body": False}

    async def client() -> None:
        statuses: list[int] = []

        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # a client that stays: after its body, nothing until it disconnects
                await asyncio.Event().wait()
            sent = True
            return message

        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                statuses.append(event["status"])

        for _ in range(each):
            scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "headers": [*headers, (b"content-length", b"%d" % len(body))],
            }
            sent = False
            await app(scope, receive, send)
            await asyncio.sleep(0)  # a pass of the loop between requests, as between a connection's reads
        if set(statuses) != {200}:
            raise RuntimeError(f"{path}: statuses {sorted(set(statuses))}")

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def measure(app: Any, request: Any, concurrency: int, total: int) -> float:
    """CPU microseconds of this process per request."""
    await drive(app, request, concurrency, max(concurrency, total // 20))  # warm-up
    started = time.process_time()
    await drive(app, request, concurrency, total)
    return (time.process_time() - started) / (total // concurrency * concurrency) * 1e6


async def main_async(args: argparse.Namespace, repo: Path) -> int:
    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    plane = build(ServerSettings(repository=repo, intra_op_threads=1, log_level="warning"))
    await plane.start()
    app = create_app(plane)
    wanted = requests()
    levels = [int(c) for c in args.concurrency.split(",")]
    try:
        if args.profile:
            await drive(app, wanted[args.profile], levels[-1], args.requests // 10)
            profiler = cProfile.Profile()
            profiler.enable()
            await drive(app, wanted[args.profile], levels[-1], args.requests)
            profiler.disable()
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)
            return 0
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):  # interleaved: noise hits every cell alike
            for protocol in args.protocols.split(","):
                for c in levels:
                    results.setdefault((protocol, c), []).append(await measure(app, wanted[protocol], c, args.requests))
        print(f"{'protocol':<12}" + "".join(f"{'c=' + str(c):>12}" for c in levels) + "   (CPU us/request, median)")
        for protocol in args.protocols.split(","):
            cells = "".join(f"{statistics.median(results[(protocol, c)]):>12.1f}" for c in levels)
            print(f"{protocol:<12}{cells}")
        if args.json:
            out = {f"{p}@{c}": statistics.median(v) for (p, c), v in results.items()}
            Path(args.json).write_text(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    finally:
        await plane.close()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per cell")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocols", default="v2-json,v2-binary,tfserving,torchserve")
    parser.add_argument("--profile", choices=sorted(requests()), help="cProfile this protocol instead of timing")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    parser.add_argument("--repo", type=Path, help="a folder to export the MLP into once and reuse")
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the modelport checkout to run (before/after)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(args.checkout))  # modelport is imported from here on
    if not args.no_pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import uvloop  # as the server runs

    run: Callable[[Path], int] = lambda repo: uvloop.run(main_async(args, repo))  # noqa: E731
    if args.repo is not None:
        export_mlp(args.repo)
        return run(args.repo)
    with tempfile.TemporaryDirectory() as folder:
        export_mlp(Path(folder))
        return run(Path(folder))


if __name__ == "__main__":
    raise SystemExit(main())
