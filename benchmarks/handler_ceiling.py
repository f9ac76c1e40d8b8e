"""The ceiling of any server that runs a TorchServe handler: the handler alone, in process, no server at all.

    python benchmarks/handler_ceiling.py MODEL_DIR IMAGE [IMAGE ...] [--batch-size 32] [--seconds 5]
                                         [--cpu 0] [--threads 1]

``MODEL_DIR`` is a version directory that ``modelport import-mar`` wrote (the archive's handler, model and extra
files). Pinned to core ``--cpu`` with ``--threads`` compute threads, the handler is initialized once, as both
servers do, and then called on batches of ``--batch-size`` requests (the images in turn, raw bytes, as a
client's ``curl -T`` body reaches it) for ``--seconds`` of CPU time. Printed, and written as one JSON line on
the last line of stdout: the CPU seconds per request (``cpu_ms_per_request``) and its inverse,
``ceiling_rps``, the most requests per second any server running this handler can answer on one core of this
machine, whatever it spends around the handler (HTTP, batching, IPC): nothing.

``app_serving.py`` runs it on the server core before its cells, so a throughput target against another server
running the same handler can be judged against what the handler leaves to win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def measure(model_dir: Path, images: list[bytes], batch_size: int, seconds: float) -> dict[str, float]:
    """The handler's CPU time per request over whole batches, after one warm-up batch."""
    from modelport.manifest import read_manifest
    from modelport.runtimes import RuntimeOptions, open_runtime
    from modelport.runtimes.handler import INPUT

    runtime = open_runtime(model_dir, read_manifest(model_dir), RuntimeOptions(intra_op_threads=1))
    batch = np.empty(batch_size, dtype=object)
    batch[:] = [images[i % len(images)] for i in range(batch_size)]
    runtime.predict({INPUT: batch})  # warm-up: the first batch pays for lazy initialization
    requests, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        runtime.predict({INPUT: batch})
        requests += batch_size
    spent = time.process_time() - started
    runtime.unload()
    return {"requests": requests, "cpu_ms_per_request": 1e3 * spent / requests, "ceiling_rps": requests / spent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a version directory written by modelport import-mar")
    parser.add_argument("images", type=Path, nargs="+", help="request bodies, sent in turn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="CPU seconds of batches to time")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to (-1: not pinned)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads (torch, OpenMP)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.seconds <= 0:
        parser.error("--batch-size and --seconds must be positive")
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args.model_dir, [p.read_bytes() for p in args.images], args.batch_size, args.seconds)
    print(
        f"handler alone: {result['cpu_ms_per_request']:.2f} ms of CPU a request over {result['requests']} requests"
        f" in batches of {args.batch_size}: at most {result['ceiling_rps']:.0f} req/s on one core"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
