"""Soak: sustained mixed-protocol load on one server, watching for drift and leaks.

The MLP benchmark model (ONNX) is served by ``modelport serve``; closed-loop clients cycle
through five protocols (KServe v2 JSON, v2 binary, v2 gRPC, TF Serving REST, TorchServe) for
``--duration`` seconds. Every ``--window`` seconds the run records throughput, p50/p99, errors,
and the server's RSS and open file descriptors. After ``--warmup`` seconds it judges:

* throughput stability: coefficient of variation of the per-window rates;
* p99 drift: median p99 of the last third of windows over that of the first third;
* RSS growth: last window over the first post-warm-up window (target < 5%);
* file descriptors: no growth (last - first post-warm-up <= 2);
* zero failed requests.

    python benchmarks/soak.py                       # the 10-minute run (writes benchmarks/results/soak.json)
    python benchmarks/soak.py --duration 20 --warmup 5 --window 2   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_models import build  # noqa: E402
from serving_procs import free_port  # noqa: E402

from modelport.launcher import LaunchOptions, launched  # noqa: E402

PROTOCOLS = ("v2-json", "v2-binary", "v2-grpc", "tfserving", "torchserve")
TARGETS = {"rss_growth_pct": 5.0, "fd_growth": 2, "errors": 0}


@dataclass
class Window:
    """What one sampling window saw."""

    t: float
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_protocol: dict[str, int] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    p.add_argument("--warmup", type=float, default=60, help="seconds before judging (default 60)")
    p.add_argument("--window", type=float, default=10, help="sampling window in seconds (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop clients (default 8)")
    p.add_argument("--workers", type=int, default=1, help="server --workers (default 1)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    return p.parse_args(argv)


def export_model(repo: Path) -> None:
    import modelport

    modelport.export(
        source=build("mlp"),
        repository=repo,
        name="mlp",
        formats=("onnx",),
        inputs=(modelport.TensorSpec.parse("x:float32:-1x64"),),
        output_names=("y",),
        name_template="{name}",
        quiet=True,
    )


@contextlib.contextmanager
def start_server(repo: Path, workers: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``modelport serve`` with ``workers`` processes (fixed ports, which --workers needs) until the block ends."""
    options = LaunchOptions(
        http_port=free_port(), grpc_port=free_port(), env={"OMP_NUM_THREADS": "1"}, log=log, timeout_s=120
    )
    with launched(repo, "--workers", str(workers), "--log-level", "warning", options=options) as server:
        yield server.process, server.url, server.grpc or ""


class Clients:
    """One request per protocol, each checked for the right output shape."""

    def __init__(self, url: str, grpc_address: str) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.http = httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64))
        self.grpc = grpcclient.InferenceServerClient(grpc_address)
        self._grpc_module = grpcclient
        x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
        self.x = x
        self.json_body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
        header = json.dumps(
            {
                "inputs": [
                    {"name": "x", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
        ).encode()
        self.binary_body = header + x.tobytes()
        self.binary_headers = {"Inference-Header-Content-Length": str(len(header))}

    async def call(self, protocol: str) -> bool:
        if protocol == "v2-json":
            r = await self.http.post("/v2/models/mlp/infer", json=self.json_body)
            return r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 10
        if protocol == "v2-binary":
            r = await self.http.post("/v2/models/mlp/infer", content=self.binary_body, headers=self.binary_headers)
            return r.status_code == 200 and len(r.content) > 40
        if protocol == "v2-grpc":
            tensor = self._grpc_module.InferInput("x", [1, 64], "FP32")
            tensor.set_data_from_numpy(self.x)
            result = await self.grpc.infer("mlp", [tensor])
            return result.as_numpy("y").shape == (1, 10)
        if protocol == "tfserving":
            r = await self.http.post("/v1/models/mlp:predict", json={"instances": self.x.tolist()})
            return r.status_code == 200 and len(r.json()["predictions"][0]) == 10
        r = await self.http.post("/predictions/mlp", json=self.x[0].tolist())
        return r.status_code == 200 and len(r.json()) == 10

    async def close(self) -> None:
        await self.http.aclose()
        await self.grpc.close()


async def client_loop(index: int, clients: Clients, windows: list[Window], stop: asyncio.Event) -> None:
    turn = index
    while not stop.is_set():
        protocol = PROTOCOLS[turn % len(PROTOCOLS)]
        turn += 1
        started = time.perf_counter()
        try:
            ok = await clients.call(protocol)
        except Exception:
            ok = False
        window = windows[-1]
        if ok:
            window.ok += 1
            window.latencies_ms.append(1000 * (time.perf_counter() - started))
            window.by_protocol[protocol] = window.by_protocol.get(protocol, 0) + 1
        else:
            window.errors += 1


def server_usage(pid: int) -> tuple[float, int]:
    """RSS (MiB) and open file descriptors of the server and its worker processes."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in processes) / 2**20
    fds = sum(p.num_fds() for p in processes)
    return rss, fds


async def run_load(args: argparse.Namespace, pid: int, url: str, grpc_address: str) -> list[dict[str, Any]]:
    clients = Clients(url, grpc_address)
    windows = [Window(0.0)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client_loop(i, clients, windows, stop)) for i in range(args.concurrency)]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < args.duration:
        await asyncio.sleep(min(args.window, args.duration - elapsed))
        done, windows[:] = windows[-1], [Window(time.monotonic() - started)]
        rss, fds = server_usage(pid)
        samples.append(summarize(done, time.monotonic() - started, args.window, rss, fds))
        print(
            f"  t={samples[-1]['t']:6.0f}s  {samples[-1]['rps']:7.0f} req/s  p99 {samples[-1]['p99_ms']:6.2f} ms"
            f"  errors {done.errors}  rss {rss:6.1f} MiB  fds {fds}",
            flush=True,
        )
    stop.set()
    await asyncio.gather(*tasks)
    await clients.close()
    return samples


def summarize(window: Window, t: float, length: float, rss: float, fds: int) -> dict[str, Any]:
    lat = np.asarray(window.latencies_ms) if window.latencies_ms else np.asarray([float("nan")])
    return {
        "t": round(t, 1),
        "rps": window.ok / length,
        "errors": window.errors,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rss_mib": rss,
        "fds": fds,
        "by_protocol": window.by_protocol,
    }


def judge(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """The verdicts over the post-warm-up windows."""
    steady = [s for s in samples if s["t"] > warmup] or samples[-1:]
    rates = [s["rps"] for s in steady]
    third = max(1, len(steady) // 3)
    p99_first = statistics.median(s["p99_ms"] for s in steady[:third])
    p99_last = statistics.median(s["p99_ms"] for s in steady[-third:])
    rss_growth = 100 * (steady[-1]["rss_mib"] / steady[0]["rss_mib"] - 1)
    fd_growth = steady[-1]["fds"] - steady[0]["fds"]
    errors = sum(s["errors"] for s in samples)
    return {
        "windows_judged": len(steady),
        "rps_mean": statistics.fmean(rates),
        "rps_cv_pct": 100 * (statistics.pstdev(rates) / statistics.fmean(rates)) if statistics.fmean(rates) else None,
        "p99_first_ms": p99_first,
        "p99_last_ms": p99_last,
        "p99_drift_pct": 100 * (p99_last / p99_first - 1),
        "rss_first_mib": steady[0]["rss_mib"],
        "rss_last_mib": steady[-1]["rss_mib"],
        "rss_growth_pct": rss_growth,
        "fd_first": steady[0]["fds"],
        "fd_last": steady[-1]["fds"],
        "fd_growth": fd_growth,
        "errors": errors,
        "pass": {
            "rss_growth": rss_growth < TARGETS["rss_growth_pct"],
            "fd_growth": fd_growth <= TARGETS["fd_growth"],
            "errors": errors == TARGETS["errors"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelport-soak-") as work:
        repo = Path(work) / "repo"
        export_model(repo)
        with start_server(repo, args.workers, Path(work) / "server.log") as (process, url, grpc_address):
            print(
                f"soak: {args.duration:g}s, {args.concurrency} clients over {', '.join(PROTOCOLS)}; pid {process.pid}"
            )
            samples = asyncio.run(run_load(args, process.pid, url, grpc_address))
        code = process.returncode
    verdict = judge(samples, args.warmup)
    verdict["requests"] = int(sum(s["rps"] * args.window for s in samples))
    verdict["server_exit_code"] = code
    report = {
        "meta": {**vars(args), "out": str(args.out), "protocols": PROTOCOLS},
        "windows": samples,
        "verdict": verdict,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    v = verdict
    print(
        f"\nsoak verdict over {v['windows_judged']} windows after {args.warmup:g}s warm-up:\n"
        f"  throughput {v['rps_mean']:.0f} req/s, CV {v['rps_cv_pct']:.1f}%\n"
        f"  p99 {v['p99_first_ms']:.2f} -> {v['p99_last_ms']:.2f} ms (drift {v['p99_drift_pct']:+.1f}%)\n"
        f"  RSS {v['rss_first_mib']:.1f} -> {v['rss_last_mib']:.1f} MiB ({v['rss_growth_pct']:+.2f}%, target < 5%)"
        f" {'PASS' if v['pass']['rss_growth'] else 'FAIL'}\n"
        f"  open fds {v['fd_first']} -> {v['fd_last']} {'PASS' if v['pass']['fd_growth'] else 'FAIL'}\n"
        f"  errors {v['errors']} of ~{v['requests']} requests {'PASS' if v['pass']['errors'] else 'FAIL'}\n"
        f"  server exit code after SIGTERM: {code}\n  report: {args.out}"
    )
    return 0 if all(v["pass"].values()) and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
