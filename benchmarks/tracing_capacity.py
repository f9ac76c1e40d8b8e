"""What tracing costs a real server's core, over HTTP, checkout against checkout.

    python benchmarks/tracing_capacity.py REPOSITORY MODEL [--checkout DIR]... [--modes off,0.01,1]
                                          [--rounds 3] [--duration 8] [--concurrency 32] [--no-export] [--kept]
                                          [--exporter-core client|server]

For each round, each checkout (default: this one) and each mode (tracing ``off``, or on at that sampling ratio
with ``parentbased_traceidratio``, exporting over OTLP/HTTP to ``otlp_sink.py``), a fresh ``modelport serve
REPOSITORY`` of that checkout is pinned to core 0, its exporter process (when tracing) moved to core 1 beside the
sink and ``wrk`` (``--concurrency`` connections posting one v2 JSON item of ``MODEL``'s only FP32 input, after a
2 s warm-up; ``--exporter-core server`` leaves the exporter process on core 0, sharing the server's core, as
``serving.py``'s (c1)). Printed per mode and checkout, medians over the interleaved rounds: req/s, the server
process's own CPU time per request (every thread, its exporter process left out) and the exporter's. The server's
CPU per request is what its core allows: on a 2-core machine the other core carries wrk, the sink and the exporter,
and can be what limits req/s: a server not kept busy spends more CPU a request (fewer requests share each pass
of its event loop and each batch). ``--no-export`` records the spans but exports none (no exporter process), so
that the server is saturated and its own cost measured alone. ``--kept`` starts each server once and loads them in
turn: a round's runs then follow each other within seconds, and the last lines, each traced mode against off
round by round (the median of the rounds' ratios), carry over a host whose speed drifts from minute to minute
(a shared machine's off runs spread 129-228 us a request in one run of fresh servers). The first lines say
whether each checkout's servers run its compiled hot path (``make native``) or its Python sources.
``serving.py --systems v2-json,v2-json-trace100,...`` measures one checkout against the floors;
``tracing_cost.py`` in process; ``instructions.py`` counts instructions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serving_procs import cpu_seconds, descendants, free_port, move_process, wait_answering  # noqa: E402

PY = sys.executable


def _wrk(url: str, body: Path, seconds: float, concurrency: int) -> int:
    """Requests ``wrk`` completed (pinned to core 1)."""
    env = dict(os.environ, WRK_BODY_FILE=str(body))
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(HERE / "post.lua")]
    out = subprocess.run([*command, url], env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) requests in", out)
    if found is None or "Non-2xx" in out:
        raise SystemExit(f"wrk did not run cleanly:\n{out}")
    return int(found.group(1))


@contextlib.contextmanager
def _server(args: argparse.Namespace, checkout: Path, mode: str, sink: str, body: Path) -> Iterator[tuple[str, int]]:
    """A fresh server of ``checkout`` in ``mode``, answering and warmed up: (its URL, its pid)."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(checkout), PYTHONSAFEPATH="1")
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    command = ["taskset", "-c", "0", PY, "-m", "modelport", "serve", args.repository, "--http-port", str(port)]
    command += ["--grpc-port", "-1", "--intra-op-threads", "1", "--log-level", "warning"]
    if mode != "off":
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        if args.no_export:
            env.update(OTEL_TRACES_EXPORTER="none")
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=mode)
        command.append("--tracing")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v2/models/{args.model}/infer"
        wait_answering(url, body.read_bytes(), 120)
        for child in descendants(server.pid) if args.exporter_core == "client" else ():  # every thread of it
            move_process(child, {1})
        _wrk(url, body, 2, args.concurrency)
        yield url, server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)


def _load(args: argparse.Namespace, url: str, pid: int, body: Path) -> tuple[float, float, float]:
    """(req/s, server us/request, exporter us/request) of ``args.duration`` seconds of wrk on the server ``pid``."""
    before, all_before = cpu_seconds(pid, tree=False), cpu_seconds(pid)
    requests = _wrk(url, body, args.duration, args.concurrency)
    spent = cpu_seconds(pid, tree=False) - before
    exporter = cpu_seconds(pid) - all_before - spent
    return requests / args.duration, spent / requests * 1e6, exporter / requests * 1e6


def _hot_path(checkout: Path) -> str:
    """Whether ``checkout``'s servers run its compiled hot path (``make native``) or its Python sources."""
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONSAFEPATH="1")
    probe = "import modelport.serving; from modelport.serving import native; print(native.active())"
    found = subprocess.run([PY, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return "compiled (build/native)" if found.strip() == "True" else "as Python sources (no current build/native)"


def _body(repository: str, model: str, folder: Path) -> Path:
    """One item of the model's only input (FP32), from its manifest."""
    manifest = json.loads(next(Path(repository, model).glob("*/modelport.json")).read_text())
    (spec,) = manifest["inputs"]
    shape = [1, *(d if d > 0 else 1 for d in spec["shape"][1:])]
    count = 1
    for d in shape:
        count *= d
    body = folder / "body.json"
    item = {"name": spec["name"], "datatype": "FP32", "shape": shape, "data": [0.5] * count}
    body.write_text(json.dumps({"inputs": [item]}))
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository")
    parser.add_argument("model")
    parser.add_argument("--checkout", type=Path, action="append", help="repeatable; default this checkout")
    parser.add_argument("--modes", default="off,0.01,1", help="off, or a sampling ratio; comma list")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--kept",
        action="store_true",
        help="start each checkout's server of each mode once and load them in turn each round, instead of a fresh"
        " server per run: the runs of a round follow each other within seconds (steadier ratios on a noisy host)",
    )
    parser.add_argument(
        "--no-export",
        action="store_true",
        help="traced modes record their spans but export none (OTEL_TRACES_EXPORTER=none: no exporter process), so"
        " that wrk alone loads the other core and the server's own cost is measured at saturation",
    )
    parser.add_argument(
        "--exporter-core",
        choices=("client", "server"),
        default="client",
        help="where the exporter process runs: beside wrk and the sink (core 1, the default), or on the server's"
        " core 0, sharing it (what serving.py's (c1) measures: req/s then counts the exporter's CPU too)",
    )
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores (0 and 1)")
    checkouts = [c.resolve() for c in args.checkout or [HERE.parent]]
    for checkout in checkouts:
        print(f"{checkout}: its hot path runs {_hot_path(checkout)}", flush=True)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs: dict[tuple[Path, str], list[tuple[float, float, float]]] = {(c, m): [] for c in checkouts for m in modes}
    sink_command = ["taskset", "-c", "1", PY, str(HERE / "otlp_sink.py")]
    with (
        tempfile.TemporaryDirectory() as work,
        subprocess.Popen(sink_command, stdout=subprocess.PIPE, text=True) as sink,
    ):
        assert sink.stdout is not None
        endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        body = _body(args.repository, args.model, Path(work))
        try:
            with contextlib.ExitStack() as kept:
                servers = {}
                if args.kept:  # every server started once, loaded in turn (the others idle)
                    for key in runs:
                        servers[key] = kept.enter_context(_server(args, *key, endpoint, body))
                for round_ in range(args.rounds):
                    for checkout in checkouts:
                        for mode in modes:
                            if args.kept:
                                found = _load(args, *servers[(checkout, mode)], body)
                            else:
                                with _server(args, checkout, mode, endpoint, body) as (url, pid):
                                    found = _load(args, url, pid, body)
                            runs[(checkout, mode)].append(found)
                            print(
                                f"round {round_ + 1} {checkout} {mode}: {found[0]:.0f} req/s, {found[1]:.1f} us,"
                                f" exporter {found[2]:.1f} us",
                                flush=True,
                            )
        finally:
            sink.terminate()
    for (checkout, mode), found in runs.items():
        rps, server, exporter = (statistics.median(r[i] for r in found) for i in range(3))
        label = "tracing off" if mode == "off" else f"tracing {float(mode):.0%}"
        print(
            f"{checkout}: {label:13} {rps:8.0f} req/s, server process {server:6.1f} CPU us/request,"
            f" its exporter {exporter:5.1f}  [server runs: {' '.join(f'{r[1]:.1f}' for r in found)}]"
        )
    for (checkout, mode), found in runs.items():  # each round's traced server against its off one, run beside it
        if mode != "off" and (checkout, "off") in runs:
            off = runs[(checkout, "off")]
            ratios = [o[1] / r[1] for o, r in zip(off, found, strict=True)]
            print(
                f"{checkout}: tracing {float(mode):.0%} against off, round by round: CPU a request off/traced median"
                f" {statistics.median(ratios):.3f} [{' '.join(f'{r:.3f}' for r in ratios)}], req/s traced/off median"
                f" {statistics.median(r[0] / o[0] for o, r in zip(off, found, strict=True)):.3f}"
            )


if __name__ == "__main__":
    main()
