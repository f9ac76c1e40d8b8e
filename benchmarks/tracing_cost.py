"""What tracing costs per request in CPU time, in process: robust where a shared machine makes req/s noisy.

    python benchmarks/tracing_cost.py REPOSITORY MODEL [--checkout DIR] [--rounds 400] [--cpu 0]

For tracing off, 100% and 1% sampling (``parentbased_traceidratio``), each in a fresh process pinned to one
core: the modelport app of ``--checkout`` (default this one) over ``REPOSITORY``, 32 requests of one item in
flight at a time straight through its ASGI interface (no HTTP), the spans encoded as the OTLP exporter does
(protobuf, ``SerializeToString``) by the SDK's batch span processor. Prints the process's CPU time per request
(every thread: the encoding included), the spans per request, and each traced mode's extra over off. Run it
for two checkouts (``git archive main | tar -x -C DIR``) to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "1", "0.01")
PATH = "/v2/models/{model}/infer"


def _measure(repository: str, model: str, mode: str, rounds: int) -> None:
    """One mode in this process: prints ``cpu_us spans_per_request``."""
    from modelport.serving import tracing
    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    settings = ServerSettings(repository=repository, intra_op_threads=1)
    exported = [0]
    if mode != "off":
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class Encoding(SpanExporter):  # type: ignore[misc]
            def export(self, spans: Any) -> SpanExportResult:
                encode_spans(spans).SerializeToString()
                exported[0] += len(spans)
                return SpanExportResult.SUCCESS

        tracing.configure(settings, Encoding())
    asyncio.run(_drive(build(settings), create_app, model, rounds, exported))
    tracing.shutdown()


async def _drive(plane: Any, create_app: Any, model: str, rounds: int, exported: list[int]) -> None:
    from modelport.serving import tracing

    await plane.start()
    app = create_app(plane)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]})
    request = _Request(app, PATH.format(model=model), body.encode())
    for _ in range(50):  # warm up
        await asyncio.gather(*(request.send() for _ in range(32)))
    tracing.flush()
    gc.collect()
    gc.freeze()  # as the server does once loaded
    exported[0] = 0
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(request.send() for _ in range(32)))
    tracing.flush()
    cpu = time.process_time() - started
    await plane.close()
    print(f"{cpu / (32 * rounds) * 1e6:.1f} {exported[0] / (32 * rounds):.2f}")


class _Request:
    """One POST of ``body`` to ``path`` through the ASGI ``app``, asserted to answer 200."""

    def __init__(self, app: Any, path: str, body: bytes) -> None:
        self.app, self.path, self.body = app, path, body
        self.headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def send(self) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST"}
        scope.update(path=self.path, raw_path=self.path.encode(), query_string=b"", root_path="", scheme="http")
        scope.update(headers=self.headers, client=("127.0.0.1", 1), server=("127.0.0.1", 80))
        messages = [{"type": "http.request", "body": self.body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        assert statuses == [200], statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository")
    parser.add_argument("model")
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in this process
    args = parser.parse_args()
    if args.mode:
        _measure(args.repository, args.model, args.mode, args.rounds)
        return
    off = None
    for mode in MODES:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(PYTHONPATH=str(args.checkout), PYTHONSAFEPATH="1", OMP_NUM_THREADS="1")
        if mode != "off":
            env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=mode)
        command = ["taskset", "-c", str(args.cpu), sys.executable, __file__, args.repository, args.model]
        command += ["--rounds", str(args.rounds), "--mode", mode]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.split()
        cpu_us, spans = float(out[0]), float(out[1])
        off = cpu_us if off is None else off
        extra = f"  +{cpu_us - off:.1f} us over off, off/traced x{off / cpu_us:.2f}" if mode != "off" else ""
        print(f"{args.checkout.name or '/'} tracing {mode:4}: {cpu_us:6.1f} CPU us/request, {spans:.2f} spans{extra}")


if __name__ == "__main__":
    main()
