"""What ``modelport tune`` buys: tuned vs default max req/s under the SLO, on the serving benchmark's MLP.

    python benchmarks/tune.py [--budget 3m] [--slo "p99<20ms"] [--search quick] [--rounds 3] [--cpus 0-1]

Exports the MLP (64 -> 256 -> 256 -> 10, where serving overhead dominates) to ONNX and ONNX
dynamic-int8, runs ``modelport tune`` on it within the budget, and reports what its confirming
run measured: the winner and the default configuration re-measured in interleaved rounds (default,
winner, default, winner, ...: each on a fresh server, the same sweep), their median max req/s under
the SLO, the ratio, and the search's wall time. Results go to ``--out`` (tune.json, tune.html,
bench.json). On a shared or small machine the load generator shares the server's CPUs; tune.json
says so, and the ratio (both sides measured alike, interleaved) is the figure to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench_models import build


def export_mlp(repo: Path) -> None:
    """The MLP as the family 'mlp': onnx and onnx-dynamic-int8."""
    import modelport

    modelport.export(
        source=build("mlp"),
        repository=repo,
        name="mlp",
        formats=("onnx",),
        quantize=("dynamic-int8",),
        inputs=(modelport.TensorSpec.parse("x:float32:-1x64"),),
        output_names=("y",),
        allow_mismatch=True,  # int8 of random weights may miss the agreement gate: it stays a candidate
        quiet=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="3m", help="the search's budget (default 3m)")
    parser.add_argument("--slo", default="p99<20ms", help="the SLO (default p99<20ms)")
    parser.add_argument("--search", default="quick", choices=("quick", "brute", "optuna"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved confirming rounds (default 3)")
    parser.add_argument("--cpus", default=None, help="the server's CPUs (default: all)")
    parser.add_argument("--level-duration", default="2s", help="time per sweep level (default 2s)")
    parser.add_argument("--knobs", default="", help="tune only these knobs (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tune"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from modelport.loadtest.options import parse_duration
    from modelport.tune import TuneOptions, run_tune
    from modelport.tune.options import parse_cpus

    args = parse_args(argv)
    repo = args.out / "repo"
    if not (repo / "mlp-onnx").is_dir():
        print("exporting the MLP to ONNX and ONNX dynamic-int8", flush=True)
        export_mlp(repo)
    options = TuneOptions(
        repository=repo,
        family="mlp",
        slos=(args.slo,),
        budget_s=parse_duration(args.budget, "--budget"),
        search=args.search,
        cpus=parse_cpus(args.cpus),
        out=args.out,
        level_s=parse_duration(args.level_duration, "--level-duration"),
        knobs=tuple(k for k in args.knobs.split(",") if k),
        confirm_rounds=args.rounds,
    )
    started = time.monotonic()
    result = run_tune(options)
    c = result.confirmation
    bench = {
        "machine": {"cpus_online": os.cpu_count(), "python": platform.python_version(), "node": platform.node()},
        "slo": args.slo,
        "search": args.search,
        "budget_s": options.budget_s,
        "search_wall_s": result.search_s,
        "total_wall_s": time.monotonic() - started,
        "candidates_measured": len(result.measurements),
        "space_size": result.space.size,
        "winner": result.best.to_json()["knobs"] if result.best else None,
        "default_rps_rounds": [m.max_rps_under_slo for m in c.default] if c else None,
        "winner_rps_rounds": [m.max_rps_under_slo for m in c.best] if c else None,
        "default_rps_median": c.default_rps if c else None,
        "winner_rps_median": c.best_rps if c else None,
        "ratio": c.ratio if c else None,
        "loadgen_shared_cpus": not result.loadgen_cpus,
    }
    (args.out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    print(json.dumps({k: v for k, v in bench.items() if k != "machine"}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
