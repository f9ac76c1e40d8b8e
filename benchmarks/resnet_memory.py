"""onnxruntime in-process on the serving benchmark's ResNet-18: speed and peak memory by batch size and option.

    python benchmarks/resnet_memory.py [--batches 1,2,4,8,16,32,mixed] [--variants default,no-arena,...]
                                       [--seconds 3] [--rounds 2] [--cpu 0] [--out FILE.json]

Every (variant, batch) cell runs in a fresh process (pinned to ``--cpu``, one intra-op thread), so its peak RSS
(``VmHWM``) is its own: ``above_mb`` is that peak less the RSS once the session is loaded, what the runs
themselves hold (activations, the arena's regions, glibc's free lists). Speed is items per second of wall time
and, robust against other load on a shared machine, items per second of the process's CPU time. ``mixed`` runs
batch sizes 1 to 32 in a fixed random order, as a batching server meets them; ``N/k`` a batch of N rows in runs
of k rows (slices of one array, as ``modelport/runtimes/onnx.py`` runs a batch whose rows take long). Cells run
in ``--rounds`` interleaved rounds; the report holds each cell's median speed and its highest peak.

Variants: ``default`` (modelport's ``onnx_arena: session``: onnxruntime's defaults), ``no-arena``
(``enable_cpu_mem_arena = False``, modelport's ``none``), ``no-mem-pattern``, ``shared`` (modelport's one arena for
the process, a 256 MiB first region), ``same-as-requested`` (that shared arena extended by exactly each request,
``arena_extend_strategy`` 1), ``device-initializers`` (``session.use_device_allocator_for_initializers``),
``shrink`` (``memory.enable_memory_arena_shrinkage`` after every run) and ``no-arena-mmap`` (no arena, glibc's
``MALLOC_MMAP_THRESHOLD_`` at 1 MiB so large blocks go back to the kernel).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = (
    "default",
    "no-arena",
    "no-mem-pattern",
    "shared",
    "same-as-requested",
    "device-initializers",
    "shrink",
    "no-arena-mmap",
)
MIXED_SEED, MIXED_RUNS = 7, 24
_SHARED_REGION_BYTES = 256 << 20  # as modelport/runtimes/onnx.py


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def _session(ort: Any, model: str, variant: str) -> tuple[Any, Any]:
    """The session and the run options of one variant (one intra-op thread, quiet)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    run = ort.RunOptions()
    if variant in ("no-arena", "no-arena-mmap"):
        options.enable_cpu_mem_arena = False
    elif variant == "no-mem-pattern":
        options.enable_mem_pattern = False
    elif variant in ("shared", "same-as-requested"):
        config = {"initial_chunk_size_bytes": _SHARED_REGION_BYTES}
        if variant == "same-as-requested":
            config = {"arena_extend_strategy": 1}
        cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(config))
        options.add_session_config_entry("session.use_env_allocators", "1")
    elif variant == "device-initializers":
        options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    elif variant == "shrink":
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]), run


def child(model: str, variant: str, batch: str, seconds: float) -> dict[str, Any]:
    """One cell, in this process: load, warm up, run ``batch`` back to back for ``seconds``."""
    import numpy as np
    import onnxruntime as ort

    session, run = _session(ort, model, variant)
    loaded = _status_mb("VmRSS")
    batch, _, run_rows = batch.partition("/")
    sizes = [int(batch)] if batch != "mixed" else list(np.random.default_rng(MIXED_SEED).integers(1, 33, MIXED_RUNS))
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((n, 3, 224, 224), dtype=np.float32) for n in set(sizes)}
    name = session.get_inputs()[0].name
    step = int(run_rows or sizes[0])  # N/k: a batch in runs of k rows, as modelport's ONNX runtime slices
    for start in range(0, sizes[0], step):  # warm-up
        session.run(None, {name: inputs[sizes[0]][start : start + step]}, run)
    items, calls = 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    while calls < len(sizes) or time.perf_counter() - wall < seconds:
        n = sizes[calls % len(sizes)]
        step = int(run_rows or n)
        for start in range(0, n, step):
            session.run(None, {name: inputs[n][start : start + step]}, run)
        items, calls = items + n, calls + 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status_mb("VmHWM") - sum(a.nbytes for a in inputs.values()) / 2**20  # less this script's inputs
    return {
        "calls": calls,
        "items_per_s": items / wall,
        "items_per_cpu_s": items / cpu,
        "loaded_mb": loaded,
        "peak_rss_mb": peak,
        "above_mb": peak - loaded,
        "after_mb": _status_mb("VmRSS") - sum(a.nbytes for a in inputs.values()) / 2**20 - loaded,
    }


def run_cell(model: Path, variant: str, batch: str, seconds: float, cpu: int | None) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if variant == "no-arena-mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    cmd = [sys.executable, __file__, "--child", str(model), "--variants", variant, "--batches", batch]
    cmd += ["--seconds", str(seconds)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def export(folder: Path) -> Path:
    """The serving benchmark's ResNet-18, exported to ONNX by ``modelport.export`` as ``serving.py`` does."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    from bench_models import build

    import modelport

    modelport.export(
        source=build("resnet18"),
        repository=folder,
        name="resnet18",
        formats=("onnx",),
        inputs=(modelport.TensorSpec.parse("x:float32:-1x3x224x224"),),
        output_names=("y",),
        quiet=True,
    )
    return next(folder.glob("resnet18-onnx/*/*.onnx"))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell over its rounds: median speeds, the highest peak."""
    return {
        "items_per_s": statistics.median(r["items_per_s"] for r in runs),
        "items_per_cpu_s": statistics.median(r["items_per_cpu_s"] for r in runs),
        "loaded_mb": min(r["loaded_mb"] for r in runs),
        "above_mb": max(r["above_mb"] for r in runs),
        "after_mb": max(r["after_mb"] for r in runs),
        "rounds": runs,
    }


def table(cells: dict[str, dict[str, dict[str, Any]]], batches: list[str]) -> str:
    lines = [f"{'variant':20s} " + " ".join(f"{'b' + b:>18s}" for b in batches)]
    for variant, row in cells.items():
        text = [f"{row[b]['items_per_cpu_s']:6.1f}/s {row[b]['above_mb']:6.0f} MB" for b in batches]
        lines.append(f"{variant:20s} " + " ".join(f"{t:>18s}" for t in text))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,2,4,8,16,32,mixed")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of runs per cell (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=0, help="core the cells are pinned to (-1: not pinned)")
    parser.add_argument("--model", type=Path, default=None, help="an ONNX ResNet-18 (default: export one)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "resnet_memory.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.variants, args.batches, args.seconds)))
        return 0
    batches, variants = args.batches.split(","), args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="resnet-memory-") as work:
        model = args.model or export(Path(work))
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_ in range(args.rounds):
            for batch in batches:
                for variant in variants:
                    cell = run_cell(model, variant, batch, args.seconds, None if args.cpu < 0 else args.cpu)
                    runs.setdefault((variant, batch), []).append(cell)
                    print(
                        f"round {round_ + 1} b{batch:5s} {variant:20s} {cell['items_per_s']:6.1f} items/s "
                        f"{cell['items_per_cpu_s']:6.1f} items/CPU-s  +{cell['above_mb']:.0f} MB",
                        flush=True,
                    )
    cells = {v: {b: summarize(runs[(v, b)]) for b in batches} for v in variants}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "cells": cells}, indent=2) + "\n")
    print("\nitems per CPU-second, peak RSS above the loaded session\n" + table(cells, batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
