"""``modelport`` command line: parse flags into one options object, make one library call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from modelport._version import __version__
from modelport.errors import InvalidArgumentError, ModelportError, UnsupportedError
from modelport.loadtest.command import add_loadtest_commands
from modelport.mobile.command import add_bundle_command
from modelport.quiet import quiet_frameworks
from modelport.storage.base import RedactSecrets
from modelport.tune.command import add_tune_command

if TYPE_CHECKING:
    from pydantic import ValidationError

    from modelport.exporters import ExportOptions

__all__ = ["build_parser", "main"]

_EPILOG_EXPORT = """\
examples:
  modelport export examples.digits.torch_model:cnn --weights digits.pt \\
      --input image:float32:-1x1x8x8 --format all --repository repo --name digits
  modelport export digits.keras --format savedmodel,tflite,onnx --quantize float16,full-int8 \\
      --eval-data digits_eval.npz --repository repo --name digits-keras
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="modelport", description="Export, serve and ship ML models.")
    parser.add_argument("--version", action="version", version=f"modelport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log converter and runtime details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_export(commands)
    _add_inspect(commands)
    _add_serve(commands)
    add_bundle_command(commands)
    _add_import_mar(commands)
    _add_pipeline_golden(commands)
    add_loadtest_commands(commands)
    add_tune_command(commands)
    # options only by their full names: argparse's prefix matching would take `serve --port 8080` (TF Serving's and
    # TorchServe's habit) for `--port-file 8080`, write that file and listen on the default port
    for command in [parser, *commands.choices.values()]:
        command.allow_abbrev = False
    return parser


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "export",
        help="convert a model to deployable formats with parity gates",
        epilog=_EPILOG_EXPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", help="package.module:factory | file.py:factory | model.pt | model.pt2 | model.keras | SavedModel dir"
    )
    p.add_argument(
        "--format", default="all", help="comma list of onnx,torchscript,pt2,savedmodel,tflite,ort or 'all' (default)"
    )
    p.add_argument(
        "--repository",
        required=True,
        help="model repository: a folder, or s3://bucket/prefix (uploaded, manifests last)",
    )
    p.add_argument("--name", required=True, help="model family name; each variant is served as NAME-VARIANT")
    p.add_argument("--version", dest="model_version", type=int, help="version number (default: next free)")
    p.add_argument("--weights", type=Path, help="state_dict for a PyTorch factory (loaded with weights_only=True)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:SHAPE[:LOW..HIGH]",
        help="input spec, repeatable, e.g. image:float32:-1x1x8x8 (-1 = dynamic)",
    )
    p.add_argument(
        "--layout",
        action="append",
        default=[],
        metavar="NAME:LAYOUT",
        help="an image input's layout, repeatable: NCHW, NHWC (NCW, NWC for sequences), e.g. data_0:NCHW; "
        "recorded in the manifest, shown as the input's format in Triton's model configuration (none by default)",
    )
    p.add_argument("--output", default="", help="comma list of output names (default: from the model, or output_N)")
    p.add_argument(
        "--quantize",
        default="",
        help="comma list of float16,dynamic-int8,full-int8 (tflite), dynamic-int8,static-int8 (onnx)",
    )
    p.add_argument("--calibration-data", type=Path, help=".npz of inputs (keyed by input name) for int8 calibration")
    p.add_argument("--eval-data", type=Path, help=".npz of inputs and 'labels': accuracy per artifact")
    p.add_argument(
        "--batch-sizes", default="1,3", help="golden batch sizes when the batch dim is dynamic (default 1,3)"
    )
    p.add_argument(
        "--dynamic-sizes",
        default="8,5",
        help="sizes of the golden inputs' dynamic dims past the batch, one per golden batch (default 8,5); a model "
        "that needs longer or even sizes (a strided audio conv, a UNet) takes e.g. 16000,12000 or 16,32",
    )
    p.add_argument("--atol", type=float, help="absolute tolerance (default per format, see README)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default per format)")
    p.add_argument(
        "--min-agreement", type=float, default=0.99, help="top-1 agreement gate for fp16/int8 (default 0.99)"
    )
    p.add_argument("--allow-mismatch", action="store_true", help="publish artifacts that fail their gate (recorded)")
    p.add_argument(
        "--tflite-shape",
        action="append",
        default=[],
        metavar="NAME:SHAPE",
        help="static shape of an input in the TFLite variants, repeatable, e.g. ids:1x128 (PyTorch sources "
        "otherwise convert at the first --batch-sizes value with other dynamic dims at 8)",
    )
    p.add_argument("--legacy-onnx", action="store_true", help="TorchScript-based torch.onnx exporter instead of dynamo")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--max-batch-size", type=int, default=64, help="max_batch_size written to manifests (default 64)")
    p.add_argument(
        "--name-template", default="{name}-{variant}", help="repository model name (default {name}-{variant})"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_run_export)


def _add_import_mar(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "import-mar",
        help="import a TorchServe .mar (TorchScript or ONNX inside) with manifest and golden vectors",
        epilog="example:\n  modelport import-mar digits.mar --repository repo --input image:float32:-1x1x8x8\n"
        "  modelport import-mar digits.mar --repository repo --input image:float32:-1x1x8x8 "
        "--remote http://127.0.0.1:8080\n"
        "  modelport import-mar model-store --ts-config config.properties --repository repo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "mar",
        type=Path,
        nargs="?",
        help="model archive: .mar, .tar.gz, or a no-archive directory; or a TorchServe model store (a folder of "
        "them; default with --ts-config: its model_store)",
    )
    p.add_argument(
        "--ts-config",
        type=Path,
        metavar="CONFIG_PROPERTIES",
        help="TorchServe's config.properties (or a config snapshot, logs/config/*-snapshot.cfg) for a model store: "
        "the archives load_models (or model_snapshot) names, each model's batchSize, maxBatchDelay, "
        "responseTimeout, minWorkers from models (default: every archive of the store)",
    )
    p.add_argument(
        "--repository",
        required=True,
        help="model repository: a folder, or s3://bucket/prefix (uploaded, manifests last)",
    )
    p.add_argument("--name", help="repository model name (default: the archive's modelName)")
    p.add_argument("--version", dest="model_version", type=int, help="version number (default: next free)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:SHAPE[:LOW..HIGH]",
        help="input spec, repeatable (archives do not record them; ONNX files do)",
    )
    p.add_argument("--output", default="", help="comma list of output names (TorchScript; default output_N)")
    p.add_argument("--format", default="all", help="formats to export the archive's model to (default: its own format)")
    p.add_argument(
        "--max-batch-size",
        type=int,
        help="max_batch_size written to manifests (default 64; a custom handler's batch size: default the "
        "archive's batchSize, else 1, as TorchServe)",
    )
    p.add_argument(
        "--sample",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="golden raw input, repeatable (custom handlers): its bytes and the handler's response are "
        "recorded and re-checked when the server loads the model",
    )
    p.add_argument(
        "--remote",
        help="serve through this TorchServe inference URL (writes runtime: torchserve to config.yaml) "
        "instead of running the model locally",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_run_import_mar)


def _add_pipeline_golden(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "pipeline-golden",
        help="record a pipeline's golden raw samples (checked when the server builds it)",
        epilog="example:\n  modelport pipeline-golden repo classify --sample kitten.jpg --sample dog.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("repository", type=Path, help="model repository folder (its models are served in-process)")
    p.add_argument("name", help="the pipeline (a model folder whose config.yaml declares pipeline:)")
    p.add_argument("--sample", action="append", required=True, type=Path, metavar="FILE", help="raw input, repeatable")
    p.set_defaults(run=_run_pipeline_golden)


def _run_pipeline_golden(args: argparse.Namespace) -> int:
    from modelport.serving.pipeline_golden import record_pipeline_samples

    if not args.repository.is_dir():  # else every name is an "unknown model" of an empty repository
        raise InvalidArgumentError(f"model repository {args.repository} is not a directory")
    samples = record_pipeline_samples(args.repository, args.name, args.sample)
    print(f"{len(samples)} golden samples recorded in {args.repository / args.name / 'samples.json'}")
    return 0


def _add_inspect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("inspect", help="list models, versions, formats, tensors and parity")
    p.add_argument("path", type=Path, help="REPO, REPO/NAME or REPO/NAME/VERSION")
    p.set_defaults(run=_run_inspect)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modelport.serving.settings import ServerSettings

    p = commands.add_parser(
        "serve",
        help="serve a model repository (KServe v2 / Triton, TF Serving and TorchServe APIs; HTTP and gRPC)",
        description="Every flag is also an environment variable MODELPORT_<FLAG> (e.g. MODELPORT_HTTP_PORT=9000); "
        "per-model settings live in REPO/<model>/config.yaml.",
    )
    p.add_argument("repository", help="model repository: a folder, or s3://bucket/prefix (gs://, az://, file://)")
    for name, field in ServerSettings.model_fields.items():
        if name == "repository":
            continue
        flag = "--" + name.replace("_", "-")
        default = field.default
        if isinstance(default, bool) or field.annotation == (bool | None):
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=field.description if default is None else f"{field.description} (default {default})",
            )
        elif name == "providers":
            p.add_argument(flag, type=_csv, default=argparse.SUPPRESS, help=f"{field.description}, comma list")
        else:
            kind = float if default is None else type(default)  # None: an optional number, chosen at start
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"{field.description} (default {default})")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from modelport.serving.server import serve
    from modelport.serving.settings import ServerSettings
    from modelport.storage import is_url

    given = {k: v for k, v in vars(args).items() if k in ServerSettings.model_fields}
    if not is_url(args.repository) and not Path(args.repository).is_dir():
        raise InvalidArgumentError(f"model repository {args.repository} is not a directory")
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        raise InvalidArgumentError(_settings_error(exc)) from None
    return serve(settings)


def _settings_error(exc: ValidationError) -> str:
    """The first error as the user typed it: ``--flag: message``, or a check across flags' own message."""
    first = exc.errors()[0]
    flag = "-".join(str(p) for p in first["loc"]).replace("_", "-")  # the flag the user typed
    error = first.get("ctx", {}).get("error")
    message = str(error) if first["type"] == "value_error" and error is not None else first["msg"]
    return f"--{flag}: {message}" if flag else message  # no flag: a model validator names its flags


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(text))
    except ValueError:
        raise InvalidArgumentError(f"{flag} takes a comma list of integers, got {text!r}") from None


def _run_export(args: argparse.Namespace) -> int:
    from modelport.exporters import ExportOptions, export
    from modelport.exporters.options import parse_formats, parse_layouts, parse_quantizations, parse_tflite_shapes
    from modelport.exporters.report import render_table
    from modelport.manifest import TensorSpec

    options = ExportOptions(
        source=args.source,
        repository=args.repository,
        name=args.name,
        formats=parse_formats(args.format),
        version=args.model_version,
        weights=args.weights,
        inputs=tuple(TensorSpec.parse(s) for s in args.input),
        output_names=_csv(args.output),
        quantize=parse_quantizations(args.quantize),
        calibration_data=args.calibration_data,
        eval_data=args.eval_data,
        batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
        dynamic_sizes=_ints(args.dynamic_sizes, "--dynamic-sizes"),
        atol=args.atol,
        rtol=args.rtol,
        min_agreement=args.min_agreement,
        allow_mismatch=args.allow_mismatch,
        legacy_onnx=args.legacy_onnx,
        opset=args.opset,
        max_batch_size=args.max_batch_size,
        name_template=args.name_template,
        quiet=args.quiet,
        quiet_converters=not args.verbose,
        tflite_shapes=parse_tflite_shapes(args.tflite_shape),
        layouts=parse_layouts(args.layout),
    )
    report = export(options)
    print(render_table(report))
    print(f"report: {str(options.repository).rstrip('/')}/.reports/{options.name}.json")
    return 0 if report.ok else 1


def _run_import_mar(args: argparse.Namespace) -> int:
    from modelport.exporters.mar import check_remote, import_mar, read_mar
    from modelport.exporters.mar_store import is_model_store
    from modelport.exporters.report import render_table

    if args.ts_config is not None or args.mar is None or is_model_store(args.mar):
        return _run_import_store(args)
    remote = check_remote(args.remote) if args.remote else None
    archive, _ = read_mar(args.mar)
    options = _archive_options(args, args.mar, args.name or archive.name, samples=tuple(args.sample))
    report = import_mar(args.mar, options, remote, handler_batch_size=args.max_batch_size)
    print(render_table(report))
    return 0 if report.ok else 1


def _archive_options(
    args: argparse.Namespace, source: Path, name: str, samples: tuple[Path, ...] = ()
) -> ExportOptions:
    """The export options ``import-mar``'s flags give an archive's (or a model store's) import."""
    from modelport.exporters import ExportOptions  # (the CLI imports the exporters only when a command needs them)
    from modelport.exporters.options import parse_formats
    from modelport.manifest import TensorSpec

    return ExportOptions(
        source=str(source),
        repository=args.repository,
        name=name,
        formats=parse_formats(args.format),
        version=args.model_version,
        inputs=tuple(TensorSpec.parse(s) for s in args.input),
        output_names=_csv(args.output),
        max_batch_size=args.max_batch_size or 64,
        quiet=args.quiet,
        quiet_converters=not args.verbose,
        samples=samples,
    )


def _run_import_store(args: argparse.Namespace) -> int:
    from modelport.exporters.mar_store import import_store, read_properties, serve_flags
    from modelport.exporters.report import render_table

    for flag, given in (("--name", args.name), ("--sample", args.sample), ("--remote", args.remote)):
        if given:
            raise InvalidArgumentError(f"{flag} names one archive's import: a model store's archives name theirs")
    properties = read_properties(args.ts_config) if args.ts_config else {}
    if args.mar is None and not properties.get("model_store"):
        raise InvalidArgumentError("give the archive or model store to import (or --ts-config with a model_store)")
    store = args.mar or Path(properties["model_store"])
    options = _archive_options(args, store, "store")  # each archive's model name replaces "store"
    reports = import_store(store, options, properties, batch_size=args.max_batch_size)
    for report in reports:
        print(render_table(report))
    flags, notes = serve_flags(properties)
    print(f"serve it as TorchServe served it: modelport serve {' '.join([str(args.repository), *flags])}")
    for note in notes:
        print(f"note: {note}")
    return 0 if all(report.ok for report in reports) else 1


def _run_inspect(args: argparse.Namespace) -> int:
    from modelport.inspection import find_versions, render_inspection

    print(render_inspection(find_versions(args.path)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; errors print one line and exit 2 (bad or unsupported arguments) or 1 (failures)."""
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_frameworks()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())  # export/import-mar to a store: its SDK's log lines too
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (InvalidArgumentError, UnsupportedError) as exc:
        print(f"modelport {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except ModelportError as exc:
        print(f"modelport {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `modelport inspect REPO | head`: the reader is gone, as for any Unix filter
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit does not fail too
        return 141  # 128 + SIGPIPE, what a shell reports for a filter killed by it


def run() -> NoReturn:
    """The ``modelport`` program: :func:`main`, then exit, without waiting for threads that a served TorchServe
    handler started and never stops (``MicroBatching``'s, a handler's own): Python would wait for them forever
    once the server has drained and stopped. TorchServe never waits for them either: it kills its workers."""
    code = main()
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")  # global options take no values
    left = _threads_left(grace_s=2.0) if command == "serve" else []
    if not left:
        sys.exit(code)
    logging.getLogger("modelport").warning(
        "exiting without waiting for %d thread(s) still running: %s", len(left), ", ".join(t.name for t in left)
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _threads_left(grace_s: float) -> list[threading.Thread]:
    """Threads the interpreter would wait for at exit that are still running after ``grace_s`` seconds."""
    deadline = time.monotonic() + grace_s
    left = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left


if __name__ == "__main__":
    run()
