"""``modelport loadtest`` and ``modelport compare``: flags -> one options object -> one library call."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from modelport.errors import InvalidArgumentError
from modelport.loadtest.options import PROTOCOLS, CompareOptions, LoadTestOptions, levels_of, parse_duration
from modelport.loadtest.slo import parse_rate
from modelport.manifest import TensorSpec

__all__ = ["add_loadtest_commands"]

_EPILOG_LOADTEST = """\
examples:
  modelport loadtest http://127.0.0.1:8000 --model digits-onnx --users 1,8,32 --duration 20s
  modelport loadtest 127.0.0.1:8001 --model digits-onnx --protocol v2-grpc --users 16 --rps 500 \\
      --slo "p99<20ms" --slo "error_rate<0.1%" --metrics-url http://127.0.0.1:8000/metrics
  modelport loadtest http://127.0.0.1:8000 --model bert --input ids:int64:-1x128:0..30000 --batch-size 4

exit code: 0 when every SLO held at every level, 1 when one failed (report.json's failed_slos says which and
by how much). Failed requests count as a failed SLO: a level whose error rate is above --max-error-rate
(default 0, any failed request, as locust's --exit-code-on-error) exits 1, unless an --slo on error_rate decides.
"""

_EPILOG_COMPARE = """\
examples:
  modelport compare repo/digits                       every variant of the family 'digits'
  modelport compare repo/digits --formats onnx,torchscript,onnx-dynamic-int8 --users 1,16 --duration 5s
  modelport compare repo --families digits-torch,digits-keras --formats onnx --users 8 --duration 3s

exit code: 0 when every variant was load-tested and none had more failed requests than --max-error-rate
(default 0) at any level; 1 otherwise (compare.json's failed_requests says which). SLO misses only rank.
"""


def add_loadtest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``loadtest`` and ``compare`` on the CLI's subcommands."""
    _add_loadtest(commands)
    _add_compare(commands)


def _add_load_shape(p: argparse.ArgumentParser, users: str, duration: str, data: str) -> None:
    p.add_argument("--users", default=users, help=f"concurrent users; a comma list sweeps levels (default {users})")
    p.add_argument("--rps", default="", help="target total req/s per level (constant throughput per user); comma list")
    p.add_argument("--duration", default=duration, help=f"time at full load per level, e.g. 30s (default {duration})")
    p.add_argument("--protocol", choices=PROTOCOLS, default="v2", help="wire protocol (default v2: KServe v2 JSON)")
    p.add_argument("--batch-size", type=int, default=1, help="rows per request for a dynamic batch dim (default 1)")
    p.add_argument("--data", default="random", help=data)
    p.add_argument(
        "--slo",
        action="append",
        default=None,
        metavar="OBJECTIVE",
        help="e.g. 'p99<50ms', 'error_rate<0.1%%', 'rps>200'; repeatable; checked at every level",
    )
    p.add_argument(
        "--max-error-rate",
        type=parse_rate,
        default=None,
        metavar="RATE",
        help="exit 1 when a level's failed requests are above this share, e.g. 0.01 or 1%% (default 0: any)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_loadtest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "loadtest",
        help="load-test a served model with locust (sweeps, SLO gates, HTML report)",
        epilog=_EPILOG_LOADTEST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="http://host:port (HTTP protocols) or host:port (gRPC protocols)")
    p.add_argument("--model", default="", help="served model name (required unless --locustfile)")
    p.add_argument("--version", dest="model_version", help="model version (default: the server's default)")
    _add_load_shape(
        p,
        "1",
        "10s",
        "'random' (default), an .npz (inputs by name, or a golden.npz), or a directory of files (images, texts)",
    )
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all within a second)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:SHAPE[:LOW..HIGH]",
        help="override or declare an input (dynamic dims, value range); needed for TorchServe without v2 metadata",
    )
    p.add_argument("--samples", type=int, default=16, help="distinct requests to cycle through (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random data seed (default 0)")
    p.add_argument("--metrics-url", help="the server's Prometheus /metrics (default URL/metrics for HTTP protocols)")
    p.add_argument("--out", type=Path, default=Path("loadtest-out"), help="report directory (default loadtest-out)")
    p.add_argument("--locustfile", type=Path, help="your own locustfile instead of the generated users")
    p.add_argument("--ui", action="store_true", help="open locust's web UI on 127.0.0.1 instead of running headless")
    p.add_argument("--ui-port", type=int, default=8089, help="web UI port (default 8089)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", default="", help="token sent as 'Authorization: Bearer' (HTTP and gRPC)")
    key.add_argument("--api-key-file", type=Path, help="read --api-key from this file (keeps it out of `ps`)")
    p.set_defaults(run=_run_loadtest)


def _add_compare(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "compare",
        help="serve every format of one model, load-test each, print the format shoot-out",
        description="Serves every exported variant of one model, runs the same sweep against each and prints the "
        "shoot-out. Default SLOs: p99<50ms and error_rate<1% (any --slo replaces them).",
        epilog=_EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", type=Path, help="REPO/NAME: the export family NAME in repository REPO (REPO with --families)"
    )
    p.add_argument("--families", default="", help="comma list: the variants of these families of REPO side by side")
    p.add_argument("--formats", default="all", help="comma list of variants (onnx, onnx-dynamic-int8, ...) or 'all'")
    _add_load_shape(
        p,
        "1,8,32",
        "10s",
        "'random' (default; the same requests for every variant), 'golden' (each variant's own) or an .npz",
    )
    p.add_argument("--out", type=Path, default=Path("compare-out"), help="report directory (default compare-out)")
    p.add_argument("--serve-args", default="", help="extra flags for `modelport serve`, e.g. '--instances 2'")
    p.set_defaults(run=_run_compare)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(f"{flag} takes a comma list of integers, got {text!r}") from None


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(f"{flag} takes a comma list of numbers, got {text!r}") from None


def _run_loadtest(args: argparse.Namespace) -> int:
    from modelport.loadtest.runner import run_loadtest

    if not args.model and args.locustfile is None:
        raise InvalidArgumentError("--model is required (unless you give your own --locustfile)")
    options = LoadTestOptions(
        url=args.url,
        model=args.model,
        protocol=args.protocol,
        version=args.model_version,
        levels=levels_of(_ints(args.users, "--users"), _floats(args.rps, "--rps")),
        duration_s=parse_duration(args.duration),
        spawn_rate=args.spawn_rate,
        inputs=tuple(TensorSpec.parse(s) for s in args.input),
        batch_size=args.batch_size,
        data=args.data,
        samples=args.samples,
        seed=args.seed,
        slos=tuple(args.slo or ()),
        metrics_url=args.metrics_url,
        out=args.out,
        locustfile=args.locustfile,
        ui=args.ui,
        ui_port=args.ui_port,
        timeout_s=args.timeout,
        quiet=args.quiet,
        api_key=_api_key(args),
        max_error_rate=args.max_error_rate,
    )
    report = run_loadtest(options)
    print(f"report: {options.out / 'report.html'} (also report.json, report.csv)")
    if report.slos:
        print("SLOs: all held" if report.passed else "SLOs FAILED:\n  " + "\n  ".join(report.failed_slos()))
    return 0 if report.passed else 1


def _api_key(args: argparse.Namespace) -> str:
    if args.api_key_file is None:
        return str(args.api_key)
    try:
        return str(args.api_key_file.read_text().strip())
    except OSError as exc:
        raise InvalidArgumentError(f"--api-key-file {args.api_key_file}: {exc.strerror}") from None


def _run_compare(args: argparse.Namespace) -> int:
    from modelport.loadtest.compare import run_compare

    formats = tuple(x.strip() for x in args.formats.split(",") if x.strip() and x.strip() != "all")
    families = tuple(x.strip() for x in args.families.split(",") if x.strip())
    options = CompareOptions(
        repository=args.model if families else args.model.parent,
        family="" if families else args.model.name,
        families=families,
        variants=formats,
        protocol=args.protocol,
        levels=levels_of(_ints(args.users, "--users"), _floats(args.rps, "--rps")),
        duration_s=parse_duration(args.duration),
        batch_size=args.batch_size,
        data=args.data,
        slos=tuple(args.slo) if args.slo is not None else CompareOptions.slos,
        out=args.out,
        serve_args=tuple(shlex.split(args.serve_args)),
        quiet=args.quiet,
        max_error_rate=args.max_error_rate or 0.0,
    )
    result = run_compare(options)
    return 0 if result.ok else 1
