"""``modelport bundle``: its flags, parsed into one :class:`BundleOptions`, and one library call."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelport.errors import InvalidArgumentError

__all__ = ["add_bundle_command"]

_EPILOG = """\
examples:
  modelport bundle repo/digits-keras --out digits-keras-bundle --eval-data eval_nhwc.npz
  modelport bundle repo/digits/1 --out bundle.zip --variants float32 --ort --labels labels.txt --mean 0 --std 16
  modelport bundle repo/digits-torch --out b --processors examples/digits/processors.yaml --sample digit-3.png

then, on the device (numpy + ai-edge-litert only):
  python digits-keras-bundle/modelport_edge.py verify digits-keras-bundle
  python digits-keras-bundle/modelport_edge.py bench digits-keras-bundle
  python b/modelport_edge.py predict b --image digit-3.png -k 3     # + Pillow
  python t/modelport_edge.py predict t --text "the cat sat"         # + tokenizers, for a text step
"""


def add_bundle_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bundle`` on the CLI's subcommands."""
    p = commands.add_parser(
        "bundle",
        help="a self-verifying edge bundle of a model's TFLite variants (+ modelport_edge.py runtime)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", type=Path, help="REPO/NAME[/VERSION]: NAME is the exported family (or one of its models)")
    p.add_argument("--out", required=True, type=Path, help="bundle directory (a .zip of it is written beside it)")
    p.add_argument(
        "--variants",
        default="",
        help="comma list of float32,float16,dynamic-int8 (int8),full-int8 (default: every one the repository has)",
    )
    p.add_argument("--ort", action="store_true", help="also bundle the ONNX Runtime Mobile .ort file")
    p.add_argument("--labels", type=Path, help="labels file, one per class (default: the class indices)")
    p.add_argument("--mean", type=_floats, help="normalization mean, one value or one per channel: (x - mean) / std")
    p.add_argument("--std", type=_floats, help="normalization std, one value or one per channel")
    p.add_argument("--eval-data", type=Path, help=".npz of inputs and 'labels': accuracy of each bundled variant")
    p.add_argument(
        "--processors",
        type=Path,
        help="YAML of the processing to bundle (a processors: section; default: the model's config.yaml)",
    )
    p.add_argument(
        "--sample",
        type=Path,
        action="append",
        default=[],
        help="a raw input (an image, or a UTF-8 .txt for a text step) to bundle with the server's answer, checked by "
        "verify on the device (repeatable; without any, the report warns that the processing goes unchecked)",
    )
    p.add_argument("--latency-runs", type=int, default=100, help="timed runs for the latency column (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_run_bundle)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _run_bundle(args: argparse.Namespace) -> int:
    from modelport.mobile.builder import build_bundle
    from modelport.mobile.options import BundleOptions, parse_variants
    from modelport.mobile.report import render_bundle_table

    if args.mean == () or args.std == ():
        raise InvalidArgumentError("--mean/--std need at least one value")
    options = BundleOptions(
        target=args.target,
        out=args.out,
        variants=parse_variants(args.variants) if args.variants else (),
        ort=args.ort,
        labels=args.labels,
        mean=args.mean,
        std=args.std,
        eval_data=args.eval_data,
        processors=args.processors,
        samples=tuple(args.sample),
        latency_runs=args.latency_runs,
        quiet=args.quiet,
    )
    report = build_bundle(options)
    print(render_bundle_table(report))
    return 0
