"""System (a): onnxruntime ``session.run`` in-process, the limit any server can reach.

    python benchmarks/raw_runtime.py --model model.onnx --shape 64 --batch 1,32 --duration 10 [--threads 1]

Prints one JSON object: ``{"<batch>": {"calls": n, "seconds": s, "items_per_s": x, "p50_ms": .., "p99_ms": ..}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import onnxruntime as ort


def measure(session: ort.InferenceSession, x: np.ndarray[Any, Any], duration: float) -> dict[str, float]:
    """Call ``session.run`` back to back for ``duration`` seconds (after a short warm-up)."""
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3):
        session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    ordered = sorted(times)
    return {
        "calls": len(times),
        "seconds": seconds,
        "items_per_s": len(times) * x.shape[0] / seconds,
        "p50_ms": 1e3 * ordered[len(ordered) // 2],
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="input shape without the batch dim, e.g. 3x224x224")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per batch size")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = default)")
    args = parser.parse_args(argv)
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    shape = tuple(int(d) for d in args.shape.split("x"))
    rng = np.random.default_rng(0)
    results = {}
    for batch in (int(b) for b in args.batch.split(",")):
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        results[str(batch)] = measure(session, x, args.duration)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
