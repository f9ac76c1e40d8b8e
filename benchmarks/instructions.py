"""Instructions a request costs, counted by valgrind's callgrind: a figure a shared, noisy machine cannot blur.

    python benchmarks/instructions.py REPOSITORY MODEL [--checkout DIR]... [--modes off,0.01,1]
                                      [--concurrency 32] [--rounds 30]

For each checkout (default: this one) and each mode (tracing ``off``, or on at that sampling ratio with
``parentbased_traceidratio``), a fresh process runs the modelport app of that checkout over ``REPOSITORY`` under
``valgrind --tool=callgrind --instr-atstart=no``: ``--concurrency`` v2 JSON requests of one item in flight at a
time, straight through its ASGI interface (no HTTP, as ``tracing_cost.py``), a few warm-up rounds, the collector
frozen as the server freezes it once loaded, then ``--rounds`` rounds with instrumentation on (``callgrind_control
-i on``). Printed: instructions per request, every thread of the process (the span recorder's too; a traced mode's
exporter process is a child, not counted: it sends to a closed port), and each one's ratio to the first checkout's
tracing off. Wall-clock time hardly enters the count: two runs of one checkout agreed within 0.1% with tracing
off, and within ~1.5% at 100% sampling (how the requests fall into batches still varies; run it a few times).
Batches run inline on the event loop here (``inline_below_ms``), as a small model's do on a server pinned to one
core, and the count leaves out the kernel (syscalls) and the HTTP layer: compare checkouts and modes with it,
and measure req/s with ``serving.py``. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _measure(repository: str, model: str, concurrency: int, rounds: int) -> None:
    """One mode in this process (under callgrind): tracing as the OTEL_* variables say."""
    from tracing_cost import _Request, _settle_heap

    from modelport.serving import tracing
    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    settings = ServerSettings(repository=repository, intra_op_threads=1, inline_below_ms=1000)
    tracing.configure(settings)

    async def drive() -> None:
        plane = build(settings)
        await plane.start()
        body = json.dumps({"inputs": [_input(plane, model)]}).encode()
        request = _Request(create_app(plane), f"/v2/models/{model}/infer", body)
        for _ in range(5):  # warm up
            await asyncio.gather(*(request.send() for _ in range(concurrency)))
        _settle_heap()  # as the server does once loaded
        _instrument("on")
        for _ in range(rounds):
            await asyncio.gather(*(request.send() for _ in range(concurrency)))
        _instrument("off")
        await plane.close()

    asyncio.run(drive())
    tracing.shutdown()


def _input(plane: Any, model: str) -> dict[str, Any]:
    """One item of the model's only input, FP32 (the benchmark models' kind)."""
    (spec,) = plane.manager.get(model, None).manifest.inputs
    shape = [1, *(d if d > 0 else 1 for d in spec.shape[1:])]
    count = 1
    for d in shape:
        count *= d
    return {"name": spec.name, "datatype": "FP32", "shape": shape, "data": [0.5] * count}


def _instrument(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def _count(args: argparse.Namespace, checkout: Path, mode: str) -> int:
    """Instructions collected for one mode of one checkout (a fresh process under callgrind)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(checkout), PYTHONSAFEPATH="1", OMP_NUM_THREADS="1")
    if mode != "off":
        env.update(MODELPORT_TRACING="true", OTEL_TRACES_SAMPLER="parentbased_traceidratio")
        env.update(OTEL_TRACES_SAMPLER_ARG=mode, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")  # nothing listens: the export fails quietly
    with tempfile.TemporaryDirectory() as work:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/out"]
        command += [sys.executable, __file__, args.repository, args.model, "--measure"]
        command += ["--concurrency", str(args.concurrency), "--rounds", str(args.rounds)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{checkout} {mode}: the measured process failed:\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository")
    parser.add_argument("model")
    parser.add_argument("--checkout", type=Path, action="append", help="repeatable; default this checkout")
    parser.add_argument("--modes", default="off,0.01,1", help="off, or a sampling ratio; comma list")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one mode, in this process
    args = parser.parse_args()
    if args.measure:
        _measure(args.repository, args.model, args.concurrency, args.rounds)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    args.repository = str(Path(args.repository).resolve())
    requests = args.concurrency * args.rounds
    reference = None
    for checkout in args.checkout or [ROOT]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            per_request = _count(args, checkout.resolve(), mode) / requests
            reference = reference or per_request
            label = "tracing off" if mode == "off" else f"tracing {float(mode):.0%}"
            print(f"{checkout}: {label:13} {per_request:10,.0f} instructions/request  x{per_request / reference:.3f}")


if __name__ == "__main__":
    main()
