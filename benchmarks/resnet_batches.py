"""What the modelport server does with the ResNet-18 under load: batches formed, CPU per item, peak memory.

    python benchmarks/resnet_batches.py [--concurrency 8,32] [--duration 6] [--systems v2-binary,v2-json]
                                        [--baseline DIR] [--memray DIR] [--out FILE.json]

One ``modelport serve`` over the serving benchmark's ResNet-18 export (``serving.py``'s server: pinned to one
core, one intra-op thread, defaults otherwise); for each concurrency and system, a load of ``--duration``
seconds (wrk, or ``loadgen.py``), then from the server's Triton statistics (``/v2/models/{m}/stats``) every
batch size run in the cell with its count and mean compute time, the items the *server* computed per second of
the load and per second of its CPU (its CPU until it is idle again, so that the batch still in flight when the
load stopped counts in both: unlike the client's req/s, not cut short by it), and the tree's peak PSS.

``--baseline DIR``: the same cells on a second server run from that checkout, interleaved (before/after).
``--memray DIR``: the server runs under ``memray run --native`` (slower; memory figures only) and DIR gets its
capture, ``memray stats``, ``memray table`` (HTML) and the largest allocations alive at the peak as text.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_models import MODELS, build  # noqa: E402
from serving_config import Config, add_run_arguments, run_config  # noqa: E402
from serving_load import Payload, run_load, write_payloads  # noqa: E402
from serving_memory import PssSampler  # noqa: E402
from serving_procs import Server, cpu_seconds, modelport_server, settle, wait_valid  # noqa: E402

MODEL = MODELS["resnet18"]


def batches(server: Server) -> dict[int, tuple[int, int]]:
    """Every batch size the server ran: (batches, compute ns), from its Triton statistics."""
    with urllib.request.urlopen(f"{server.url}/v2/models/{MODEL.name}-onnx/stats", timeout=10) as reply:
        stats = json.load(reply)["model_stats"][0]
    return {int(b["batch_size"]): (b["compute_infer"]["count"], b["compute_infer"]["ns"]) for b in stats["batch_stats"]}


def cell(cfg: Config, server: Server, payload: Payload, concurrency: int) -> dict[str, Any]:
    """One load (once the server is idle), with the batches it formed and the server's CPU and memory meanwhile."""
    settle([server])
    before, cpu, wall = batches(server), cpu_seconds(server.proc.pid), time.perf_counter()
    with PssSampler(server.proc.pid) as memory:
        load = run_load(cfg, server.url, server.grpc, payload, concurrency)
        wall = time.perf_counter() - wall
        settle([server])  # the batches still running when the load stopped: their CPU and their items both count
    cpu = cpu_seconds(server.proc.pid) - cpu
    after = batches(server)
    formed = {
        size: (count - before.get(size, (0, 0))[0], ns - before.get(size, (0, 0))[1])
        for size, (count, ns) in after.items()
        if count > before.get(size, (0, 0))[0]
    }
    items = sum(size * count for size, (count, _) in formed.items())
    runs = sum(count for count, _ in formed.values())
    return {
        "rps": load["rps"],
        "p50_ms": load["p50_ms"],
        "items": items,
        "server_items_per_s": items / wall,
        "items_per_cpu_s": items / cpu if cpu else 0.0,
        "mean_batch": items / runs if runs else 0.0,
        "batches": {str(size): {"count": c, "ms": ns / c / 1e6} for size, (c, ns) in sorted(formed.items())},
        "peak_pss_mb": memory.peak_mb,
    }


def memray_report(capture: Path, folder: Path, top: int = 15) -> None:
    """``memray stats``, ``memray table`` (HTML: the allocations alive at the peak) and the ``top`` of that table as
    text, next to the capture (``memray tree`` is interactive)."""
    done = subprocess.run([sys.executable, "-m", "memray", "stats", str(capture)], capture_output=True, text=True)
    (folder / "memray-stats.txt").write_text(done.stdout + done.stderr)
    html = folder / "memray-table.html"
    subprocess.run([sys.executable, "-m", "memray", "table", "-f", "-o", str(html), str(capture)], check=True)
    marker = "const packed_data = "
    line = next(line for line in html.read_text().splitlines() if marker in line)
    rows = sorted(json.loads(line.split(marker, 1)[1].rstrip(";")), key=lambda row: -row["size"])
    text = [
        f"{row['size'] / 2**20:8.1f} MiB {row['n_allocations']:7d} x {row['allocator']:13s} "
        + html_unescape(row["stack_trace"])
        for row in rows[:top]
    ]
    total = sum(row["size"] for row in rows) / 2**20
    (folder / "memray-peak.txt").write_text(f"alive at the peak: {total:.1f} MiB\n" + "\n".join(text) + "\n")


def wrap(argv: list[str]) -> None:
    """As the server's command prefix: run the server's Python under ``memray run --native -o CAPTURE``."""
    import os

    capture, command = argv[0], argv[1:]
    at = next(i for i, arg in enumerate(command) if arg == sys.executable or arg.endswith("/python"))
    memray = ["-m", "memray", "run", "--native", "--quiet", "--force", "-o", capture]
    os.execvp(command[0], [*command[: at + 1], *memray, *command[at + 1 :]])


def _print(system: str, concurrency: int, found: dict[str, Any]) -> None:
    print(
        f"{system:15s} c={concurrency:<3d} {found['rps']:6.1f} req/s (client), {found['server_items_per_s']:6.1f} "
        f"items/s and {found['items_per_cpu_s']:6.1f} items/CPU-s (server), mean batch {found['mean_batch']:5.1f}, "
        f"peak PSS {found['peak_pss_mb']:5.0f} MiB; batches {found['batches']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, servers="the server")
    parser.add_argument("--systems", default="v2-binary,v2-json", help="v2-binary, v2-json, tfserving, v2-grpc")
    parser.add_argument("--memray", type=Path, default=None, metavar="DIR")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "resnet_batches.json")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="also this checkout's server")
    parser.add_argument("--wrap", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.wrap:
        wrap(args.wrap)
    cfg = run_config(args, models=["resnet18"], ts_batch_size=0, ts_max_batch_delay_ms=0, out=args.out)
    wrapper: tuple[str, ...] = ()
    if args.memray is not None:
        args.memray.mkdir(parents=True, exist_ok=True)
        wrapper = (sys.executable, __file__, "--wrap", str(args.memray.resolve() / "server.bin"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="resnet-batches-") as folder:
        work = Path(folder)
        spec = "x:float32:-1x" + "x".join(map(str, MODEL.input_shape))
        import modelport

        modelport.export(
            source=build(MODEL.name),
            repository=work / "repo",
            name=MODEL.name,
            formats=("onnx",),
            inputs=(modelport.TensorSpec.parse(spec),),
            output_names=("y",),
            quiet=True,
        )
        payloads = write_payloads(MODEL, work)
        with ExitStack() as stack:
            servers = {"": stack.enter_context(modelport_server(cfg, MODEL, work / "repo", work, wrapper=wrapper))}
            if args.baseline is not None:
                servers["base "] = stack.enter_context(
                    modelport_server(cfg, MODEL, work / "repo", work, checkout=args.baseline)
                )
            for server in servers.values():
                if server.error is not None:
                    raise SystemExit(f"the server failed: {server.error}")
                wait_valid(server, payloads["v2-binary"], cfg.startup_timeout)
            for _ in range(cfg.rounds):
                for concurrency in cfg.concurrency:
                    for system in args.systems.split(","):
                        for label, server in servers.items():
                            found = cell(cfg, server, payloads[system], concurrency)
                            results.setdefault(f"{label}{system} c={concurrency}", []).append(found)
                            _print(f"{label}{system}", concurrency, found)
    if args.memray is not None:
        memray_report(args.memray / "server.bin", args.memray)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
