"""What the modelport server does with the ResNet-18 under load: batches formed, CPU per item, peak memory.

    python benchmarks/resnet_batches.py [--concurrency 8,32] [--duration 6] [--systems v2-binary,v2-json]
                                        [--memray DIR] [--out benchmarks/results/resnet_batches.json]

One ``modelport serve`` over the serving benchmark's ResNet-18 export (``serving.py``'s server: pinned to one
core, one intra-op thread, defaults otherwise); for each concurrency and system, a load of ``--duration``
seconds (wrk, or ``loadgen.py``), then from the server's Triton statistics (``/v2/models/{m}/stats``) every
batch size run in the cell with its count and mean compute time, the items the *server* computed per second
of the cell and per second of its CPU (unlike the client's req/s, not cut short by the batch still in flight
when the load stops), and the tree's peak PSS. ``--memray DIR``: the server runs under ``memray run --native``
(slower; memory figures only) and DIR gets its capture and ``memray stats`` / ``memray tree`` at the peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_models import MODELS, build  # noqa: E402
from serving_config import Config, add_run_arguments, run_config  # noqa: E402
from serving_load import Payload, run_load, write_payloads  # noqa: E402
from serving_memory import PssSampler  # noqa: E402
from serving_procs import Server, cpu_seconds, modelport_server, wait_valid  # noqa: E402

MODEL = MODELS["resnet18"]


def batches(server: Server) -> dict[int, tuple[int, int]]:
    """Every batch size the server ran: (batches, compute ns), from its Triton statistics."""
    with urllib.request.urlopen(f"{server.url}/v2/models/{MODEL.name}-onnx/stats", timeout=10) as reply:
        stats = json.load(reply)["model_stats"][0]
    return {int(b["batch_size"]): (b["compute_infer"]["count"], b["compute_infer"]["ns"]) for b in stats["batch_stats"]}


def cell(cfg: Config, server: Server, payload: Payload, concurrency: int) -> dict[str, Any]:
    """One load, with the batches it formed and the server's CPU and memory meanwhile."""
    before, cpu, wall = batches(server), cpu_seconds(server.proc.pid), time.perf_counter()
    with PssSampler(server.proc.pid) as memory:
        load = run_load(cfg, server.url, server.grpc, payload, concurrency)
    cpu, wall = cpu_seconds(server.proc.pid) - cpu, time.perf_counter() - wall
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


def memray_report(capture: Path, folder: Path) -> None:
    """``memray stats`` and ``memray tree`` (the allocations alive at the peak) next to the capture."""
    for command in ("stats", "tree"):
        done = subprocess.run([sys.executable, "-m", "memray", command, str(capture)], capture_output=True, text=True)
        (folder / f"memray-{command}.txt").write_text(done.stdout + done.stderr)


def wrap(argv: list[str]) -> None:
    """As the server's command prefix: run the server's Python under ``memray run --native -o CAPTURE``."""
    import os

    capture, command = argv[0], argv[1:]
    at = next(i for i, arg in enumerate(command) if arg == sys.executable or arg.endswith("/python"))
    memray = ["-m", "memray", "run", "--native", "--quiet", "--force", "-o", capture]
    os.execvp(command[0], [*command[: at + 1], *memray, *command[at + 1 :]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, servers="the server")
    parser.add_argument("--systems", default="v2-binary,v2-json", help="v2-binary, v2-json, tfserving, v2-grpc")
    parser.add_argument("--memray", type=Path, default=None, metavar="DIR")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "resnet_batches.json")
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
        with modelport_server(cfg, MODEL, work / "repo", work, wrapper=wrapper) as server:
            if server.error is not None:
                raise SystemExit(f"the server failed: {server.error}")
            wait_valid(server, payloads["v2-binary"], cfg.startup_timeout)
            for _ in range(cfg.rounds):
                for concurrency in cfg.concurrency:
                    for system in args.systems.split(","):
                        found = cell(cfg, server, payloads[system], concurrency)
                        results.setdefault(f"{system} c={concurrency}", []).append(found)
                        print(
                            f"{system:10s} c={concurrency:<3d} {found['rps']:6.1f} req/s (client), "
                            f"{found['server_items_per_s']:6.1f} items/s and {found['items_per_cpu_s']:6.1f} "
                            f"items/CPU-s (server), mean batch {found['mean_batch']:5.1f}, "
                            f"peak PSS {found['peak_pss_mb']:5.0f} MiB; batches {found['batches']}",
                            flush=True,
                        )
    if args.memray is not None:
        memray_report(args.memray / "server.bin", args.memray)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
