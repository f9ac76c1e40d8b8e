"""KServe v2 gRPC load generator: ``ModelInfer`` with N calls in flight on one grpc.aio channel.

    python benchmarks/grpc_loadgen.py --target 127.0.0.1:8001 --request request.bin --concurrency 8 \
        --duration 10 [--width 10]

``--request`` holds one serialized ``inference.ModelInferRequest`` (``tritonclient.grpc.service_pb2``).
``C`` tasks each send it back to back for ``duration`` seconds; prints one JSON object with the fields
``loadgen.py`` and the wrk parser produce: ``non_2xx`` counts calls that ended with a gRPC status other
than OK (or, with ``--width``, an answer without one output of ``width`` FP32 values), ``socket_errors``
calls that ended UNAVAILABLE (no connection). Like ``loadgen.py`` it is Python: its req/s are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc
from loadgen import Tally, summary
from tritonclient.grpc import service_pb2, service_pb2_grpc


def well_formed(reply: Any, width: int) -> bool:
    """One output of shape [1, width] whose raw contents are ``width`` FP32 values."""
    return (
        len(reply.outputs) == 1
        and list(reply.outputs[0].shape) == [1, width]
        and len(reply.raw_output_contents) == 1
        and len(reply.raw_output_contents[0]) == 4 * width
    )


async def caller(stub: Any, request: Any, deadline: float, width: int | None, tally: Tally) -> None:
    """One in-flight call at a time until ``deadline``."""
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            reply = await stub.ModelInfer(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                tally.socket_errors += 1
                await asyncio.sleep(0.05)
                continue
            tally.non_2xx += 1
        else:
            if width is not None and not well_formed(reply, width):
                tally.non_2xx += 1
        tally.latencies.append(time.perf_counter() - start)


async def run(target: str, request: Any, concurrency: int, duration: float, width: int | None) -> dict[str, Any]:
    """Drive the load and summarise it."""
    tally = Tally()
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(caller(stub, request, deadline, width, tally) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return summary(tally, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--request", required=True, help="file holding one serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=None, help="check every answer: one [1, WIDTH] FP32 output")
    args = parser.parse_args(argv)
    with open(args.request, "rb") as f:
        request = service_pb2.ModelInferRequest.FromString(f.read())
    result = asyncio.run(run(args.target, request, args.concurrency, args.duration, args.width))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
