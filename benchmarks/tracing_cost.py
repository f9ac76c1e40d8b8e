"""What tracing costs per request in CPU time, in process: robust where a shared machine makes req/s noisy.

    python benchmarks/tracing_cost.py REPOSITORY MODEL [--checkout DIR] [--rounds 400] [--repeat 3]
                                      [--cpu 0] [--exporter-cpu 1] [--placements own,shared]

For tracing off, 100% and 1% sampling (``parentbased_traceidratio``), each in a fresh process pinned to core
``--cpu``: the modelport app of ``--checkout`` (default this one) over ``REPOSITORY``, 32 requests of one item in
flight at a time straight through its ASGI interface (no HTTP). Traced modes export as a server does: over
OTLP/HTTP (in whatever process the checkout exports from) to ``otlp_sink.py`` (the collector), which runs on
``--exporter-cpu``. Each traced mode runs with each placement of the processes the server starts (its exporter
process): ``own``, on ``--exporter-cpu`` (a spare core: production), and ``shared``, on the server's core.
The modes run interleaved ``--repeat`` times; printed are the medians of the server process's CPU time per
request (every thread), its extra over off and the ratio off/traced (the throughput ratio on one saturated core),
the CPU time per request of the processes it started, and the spans received per request; for ``shared``, the
ratio is off over server plus exporter (they share the one core). Run it for two checkouts
(``git archive main modelport | tar -x -C DIR``) to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RATES = ("off", "1", "0.01")
PATH = "/v2/models/{model}/infer"


def _measure(repository: str, model: str, rounds: int, exporter_cpu: int | None) -> None:
    """One mode in this process (tracing as the OTEL_* variables say): prints ``server_us children_us spans``."""
    from modelport.serving import tracing
    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    settings = ServerSettings(repository=repository, intra_op_threads=1)
    tracing.configure(settings)
    if exporter_cpu is not None:
        for child in _children():  # every thread of it (sched_setaffinity moves one)
            for task in Path(f"/proc/{child}/task").iterdir():
                os.sched_setaffinity(int(task.name), {exporter_cpu})
    asyncio.run(_drive(build(settings), create_app, model, rounds))
    tracing.shutdown()


async def _drive(plane: Any, create_app: Any, model: str, rounds: int) -> None:
    from modelport.serving import tracing

    await plane.start()
    app = create_app(plane)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]})
    request = _Request(app, PATH.format(model=model), body.encode())
    for _ in range(50):  # warm up
        await asyncio.gather(*(request.send() for _ in range(32)))
    tracing.flush()
    _settle_heap()  # as the server does once loaded
    spans, children = _received(), _children_cpu()
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(request.send() for _ in range(32)))
    tracing.flush()
    cpu = time.process_time() - started
    children, spans = _children_cpu() - children, _received() - spans
    await plane.close()
    print(f"{cpu / (32 * rounds) * 1e6:.2f} {children / (32 * rounds) * 1e6:.2f} {spans / (32 * rounds):.3f}")


def _children() -> list[int]:
    """This process's children (the exporter process, when the checkout starts one)."""
    found: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def _children_cpu() -> float:
    """User + system CPU seconds of this process's live children."""
    total = 0
    for pid in _children():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _received() -> int:
    """Spans the sink has received (0 with tracing off)."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return 0
    with urllib.request.urlopen(f"{endpoint}/stats") as reply:
        return int(json.load(reply)["spans"])


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
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # a client that stays: after its body, nothing until it disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        assert statuses == [200], statuses


def _run_mode(args: argparse.Namespace, mode: str, sink: str, exporter_cpu: int) -> tuple[float, float, float]:
    """One mode in a fresh process pinned to ``--cpu`` (its children to ``exporter_cpu``): (server us, children
    us, spans) per request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(args.checkout), PYTHONSAFEPATH="1", OMP_NUM_THREADS="1")
    if mode != "off":
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=mode)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    command = ["taskset", "-c", str(args.cpu), sys.executable, __file__, args.repository, args.model]
    command += ["--rounds", str(args.rounds), "--exporter-cpu", str(exporter_cpu), "--mode", mode]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.split()
    server, children, spans = (float(x) for x in out[-3:])
    return server, children, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository")
    parser.add_argument("model")
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of every mode (medians printed)")
    parser.add_argument("--cpu", type=int, default=0, help="the core of the measured process")
    parser.add_argument("--exporter-cpu", type=int, default=1, help="the core of the OTLP sink and its children")
    parser.add_argument("--placements", default="own,shared", help="where the exporter process runs: own, shared")
    parser.add_argument("--mode", choices=RATES, help=argparse.SUPPRESS)  # one mode, in this process
    args = parser.parse_args()
    if args.mode:
        _measure(args.repository, args.model, args.rounds, args.exporter_cpu)
        return
    sink_command = ["taskset", "-c", str(args.exporter_cpu), sys.executable, str(ROOT / "benchmarks" / "otlp_sink.py")]
    with subprocess.Popen(sink_command, stdout=subprocess.PIPE, text=True) as sink:
        assert sink.stdout is not None
        endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        try:
            placements = {"own": args.exporter_cpu, "shared": args.cpu}
            chosen = [p.strip() for p in args.placements.split(",") if p.strip()]
            modes = [("off", "off", args.exporter_cpu)]
            modes += [(f"{rate} {p}", rate, placements[p]) for rate in RATES[1:] for p in chosen]
            runs: dict[str, list[tuple[float, float, float]]] = {mode[0]: [] for mode in modes}
            for _ in range(args.repeat):
                for name, rate, cpu in modes:
                    runs[name].append(_run_mode(args, rate, endpoint, cpu))
        finally:
            sink.terminate()
    _report(args.checkout.name or "/", runs)


def _report(name: str, runs: dict[str, list[tuple[float, float, float]]]) -> None:
    off = statistics.median(r[0] for r in runs["off"])
    for mode, found in runs.items():
        server, children, spans = (statistics.median(r[i] for r in found) for i in range(3))
        line = f"{name} tracing {mode:11}: server {server:6.1f} CPU us/request"
        if mode != "off":
            shared = mode.endswith("shared")
            core = server + children if shared else server
            line += f" (+{server - off:5.1f} over off), its exporter {children:5.1f} us/request,"
            line += f" off/traced x{off / core:.2f}{' (server+exporter)' if shared else ''},"
            line += f" {spans:.2f} spans/request"
        print(line, f" [server runs: {' '.join(f'{r[0]:.1f}' for r in found)}]")


def _settle_heap() -> None:
    """What the server does to its heap once loaded (a checkout from before ``settle_heap``: what it did)."""
    try:
        from modelport.serving.memory import settle_heap
    except ImportError:
        gc.collect()
        gc.freeze()
        return
    settle_heap()


if __name__ == "__main__":
    main()
