"""``modelport bundle``: the published TFLite (and ORT) variants of a model as one self-verifying edge bundle.

OUT/                      and OUT.zip of it
    bundle.json           tensors, normalization, labels, processing (image, top-k), int8 quantization,
                          golden vectors and raw samples with tolerances per variant, accuracy,
                          sha256 of every file, tool versions
    float32.tflite ...    each with TFLite Metadata and labels.txt zipped onto it
    labels.txt            the classes' names (--labels, the top-k step's file, index_to_name.json, the manifest's)
    tokenizer.json        the text step's tokenizer, when the model takes text
    samples/              raw inputs (images, texts) with the server pipeline's answers in bundle.json
    modelport_edge.py     the runtime: numpy + a LiteRT interpreter (+ Pillow for images)
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError
from modelport.exporters.artifact import quiet_output
from modelport.golden import GOLDEN_FILE, load_golden, load_npz_inputs
from modelport.manifest import file_sha256
from modelport.mobile import modelport_edge as edge
from modelport.mobile.describe import LABELS_FILE, bundle_inputs, bundle_outputs, model_metadata, read_labels
from modelport.mobile.options import BundleOptions
from modelport.mobile.report import BundleReport, BundleRow
from modelport.mobile.samples import BundleProcessing, bundle_processing, declared_processing, labels_file
from modelport.mobile.sources import VariantSource, find_sources
from modelport.mobile.tflite_metadata import embed_metadata
from modelport.parity import DEFAULT_TOLERANCES, accuracy
from modelport.runtimes.base import Arrays, import_framework

__all__ = ["build_bundle"]

_TOLERANCE_KEYS = {"float32": "tflite", "ort": "ort"}  # the others are keyed by their quantization
EvalData = tuple[Arrays, np.ndarray[Any, Any] | None]


@dataclass(frozen=True)
class _Shared:
    """What every variant of one bundle shares: its tensors, labels, processing and eval data."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    labels: list[str]
    processing: BundleProcessing
    eval_data: EvalData | None


def build_bundle(options: BundleOptions) -> BundleReport:
    """Build the bundle directory and its zip; see ``modelport bundle --help``."""
    family, sources = find_sources(options)
    out, previous = _fresh_directory(options.out)
    try:
        report = _build(options, family, sources, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a half-built bundle would make every later --out refuse it
        if previous is not None:  # a build that fails leaves the bundle (and zip) that were there
            previous.rename(out)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return report


def _build(options: BundleOptions, family: str, sources: list[VariantSource], out: Path) -> BundleReport:
    first = sources[0]
    declared = declared_processing(options, first)
    labels = read_labels(options, first.manifest, first.directory, labels_file(declared, first))
    inputs, outputs = bundle_inputs(first.manifest, options), bundle_outputs(first.manifest, labels)
    if labels:
        (out / LABELS_FILE).write_text("\n".join(labels) + "\n")
    with quiet_output(enabled=options.quiet):
        processing = bundle_processing(options, first, declared, inputs, out)
    shared = _Shared(inputs, outputs, labels, processing, _eval_data(options, first))
    raw = "text" if any(step.get("kind") == "text" for step in (processing.spec or {}).get("pre", [])) else "image"
    report = BundleReport(family, str(out), str(_archive(out)), notes=list(processing.notes), raw=raw)
    variants = {}
    for source in sources:
        _progress(options, f"{source.name}: {source.directory} -> {out.name}/")
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++, which no setting silences
        with quiet_output(enabled=options.quiet):
            entry, row = _add_variant(out, source, shared, options)
        variants[source.name] = entry
        report.rows.append(row)
    shutil.copyfile(Path(edge.__file__), out / "modelport_edge.py")
    bundle = json.loads(json.dumps(_manifest(family, first, shared, variants, out)))  # the digest of what is read
    bundle[edge.CONTENT_KEY] = edge.content_digest(bundle)
    (out / edge.BUNDLE_FILE).write_text(json.dumps(bundle, indent=1) + "\n")
    edge.verify_files(out, bundle)
    _zip(out)
    return report


def _fresh_directory(out: Path) -> tuple[Path, Path | None]:
    """An empty ``out``, and where the bundle that was there is kept until the new one is built."""
    out = out.with_suffix("") if out.suffix == ".zip" else out
    if out.exists() and any(out.iterdir()) and not (out / edge.BUNDLE_FILE).exists():
        raise InvalidArgumentError(f"--out {out} is a non-empty directory that is not a bundle; choose another")
    previous = out.with_name(f".{out.name}.previous") if (out / edge.BUNDLE_FILE).exists() else None
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out, previous


def _add_variant(
    out: Path, source: VariantSource, shared: _Shared, options: BundleOptions
) -> tuple[dict[str, Any], BundleRow]:
    inputs, outputs, labels = shared.inputs, shared.outputs, shared.labels
    manifest = source.manifest
    is_ort = manifest.format == "ort"
    file = f"{source.name}.ort" if is_ort else f"{source.name}.tflite"
    model = (source.directory / manifest.artifact).read_bytes()
    entry: dict[str, Any] = {
        "file": file,
        "runtime": "onnxruntime" if is_ort else "tflite",
        "repository_model": f"{manifest.name}/{manifest.version}",
        "method": manifest.quantization.method if manifest.quantization else None,
        "inputs": [{**spec, "shape": list(s.shape)} for spec, s in zip(inputs, manifest.inputs, strict=True)],
        "native_names": dict(manifest.native_names),
        "converter": dict(manifest.platform),
    }
    if not is_ort:
        order, entry["signature"], entry["quantization"] = _interface(model, manifest.native_names)
        metadata = model_metadata(manifest, source.name, inputs, outputs, order, shared.processing.spec)
        model = embed_metadata(model, metadata, {LABELS_FILE: (out / LABELS_FILE).read_bytes()} if labels else {})
    (out / file).write_bytes(model)
    atol, rtol = DEFAULT_TOLERANCES[_TOLERANCE_KEYS.get(source.name, source.name)]
    entry["tolerance"] = {"atol": atol, "rtol": rtol, "top1": True}
    entry["golden"] = []
    probe = {
        "format": "modelport-edge-bundle",
        "variants": {source.name: entry},
        "inputs": inputs,
        "outputs": outputs,
        "max_batch_size": manifest.max_batch_size,
        "labels": labels,
        "processing": shared.processing.spec or {},
        "samples": shared.processing.samples,
    }
    runner = edge.EdgeModel(out, probe, source.name, edge.open_session(out / file, entry, None, None))
    # the raw samples' expected outputs: the server's tensors through this very file
    entry["samples"] = [_encode(runner.run(dict(x))) for x in shared.processing.inputs]
    cases = load_golden(source.directory / GOLDEN_FILE)
    expected = [runner.run(dict(case.inputs)) for case in cases]
    entry["golden"] = [
        {"inputs": _encode(c.inputs), "expected": _encode(e)} for c, e in zip(cases, expected, strict=True)
    ]
    entry["source_max_abs_error"] = max(
        float(np.max(np.abs(e[k].astype(np.float64) - c.outputs[k]), initial=0.0))
        for c, e in zip(cases, expected, strict=True)
        for k in e
    )
    row = _row(source, file, len(model), entry, runner, shared.eval_data, options)
    entry.update(accuracy=row.accuracy, eval_samples=row.eval_samples, latency_p50_ms=row.latency_p50_ms)
    return entry, row


def _interface(model: bytes, native_names: dict[str, str]) -> tuple[tuple[list[str], list[str]], str, dict[str, Any]]:
    """The model's input/output order (manifest names), its signature and the int8 tensors' scale/zero point."""
    litert = import_framework("ai_edge_litert.interpreter", "tflite")
    interpreter = litert.Interpreter(model_content=model)
    signatures = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    manifest_name = {native: name for name, native in native_names.items()}
    order, quantization = [], {}
    for kind, details, listed in (
        ("inputs", runner.get_input_details(), interpreter.get_input_details()),
        ("outputs", runner.get_output_details(), interpreter.get_output_details()),
    ):
        position = {d["index"]: i for i, d in enumerate(listed)}
        natives = sorted(details, key=lambda n: position.get(details[n]["index"], len(position)))
        order.append([manifest_name.get(n, n) for n in natives])
        quantization[kind] = {
            n: _quant(d) for n, d in details.items() if np.dtype(d["dtype"]).kind in "iu" and _quant(d)
        }
    return (order[0], order[1]), key, quantization


def _quant(detail: dict[str, Any]) -> dict[str, Any] | None:
    params = detail["quantization_parameters"]
    if len(params["scales"]) != 1:
        return None
    dtype = np.dtype(detail["dtype"]).name
    return {"dtype": dtype, "scale": float(params["scales"][0]), "zero_point": int(params["zero_points"][0])}


def _row(
    source: VariantSource,
    file: str,
    size: int,
    entry: dict[str, Any],
    runner: edge.EdgeModel,
    eval_data: EvalData | None,
    options: BundleOptions,
) -> BundleRow:
    parity = source.manifest.parity
    agreement = [o.top1_agreement for o in parity.outputs if o.top1_agreement is not None] if parity else []
    acc, samples = (parity.accuracy if parity else None), None
    if eval_data is not None and eval_data[1] is not None:
        classifier = next((o["name"] for o in runner.outputs if o.get("classifier")), None)
        if classifier is not None:
            acc, samples = accuracy(_eval_scores(runner, eval_data[0], classifier), eval_data[1]), len(eval_data[1])
    sample = {k: v[:1] if runner.batched else v for k, v in _first_inputs(entry).items()}
    return BundleRow(
        variant=source.name,
        file=file,
        size_bytes=size,
        source_max_abs_error=entry["source_max_abs_error"],
        top1_agreement=min(agreement) if agreement else None,
        accuracy=acc,
        eval_samples=samples,
        latency_p50_ms=_latency(runner, sample, options.latency_runs),
        parity="pass" if parity and parity.passed else "allowed",
        **_image_latency(runner, options.latency_runs),
    )


def _first_inputs(entry: dict[str, Any]) -> Arrays:
    return {k: edge.decode_array(v) for k, v in entry["golden"][0]["inputs"].items()}


def _latency(runner: edge.EdgeModel, inputs: Arrays, runs: int) -> float:
    for _ in range(min(10, runs)):
        runner.run(dict(inputs))
    times = []
    for _ in range(runs):
        tick = time.perf_counter()
        runner.run(dict(inputs))
        times.append(time.perf_counter() - tick)
    return float(np.percentile(times, 50)) * 1e3


def _image_latency(runner: edge.EdgeModel, runs: int) -> dict[str, float]:
    """p50 of decode (or tokenize) -> tensor and -> label over the raw samples, through modelport_edge.py."""
    samples = runner.bundle.get("samples", [])
    if not samples:
        return {}
    data = [(runner.directory / s["file"]).read_bytes() for s in samples]
    pre, end_to_end = [], []
    for index in range(runs):
        tick = time.perf_counter()
        tensors = runner.preprocess(data[index % len(data)])
        processed = time.perf_counter()
        runner.answer(runner.run(tensors))
        pre.append(processed - tick)
        end_to_end.append(time.perf_counter() - tick)
    return {
        "image_p50_ms": float(np.percentile(pre, 50)) * 1e3,
        "end_to_end_p50_ms": float(np.percentile(end_to_end, 50)) * 1e3,
    }


def _eval_data(options: BundleOptions, first: VariantSource) -> EvalData | None:
    """``--eval-data``: one row per example, each row one input of the model (``3x32x32`` without a batch dimension
    is ``Nx3x32x32``; ``1x3x32x32`` is ``Nx3x32x32`` too)."""
    if options.eval_data is None:
        return None
    specs = tuple(s.model_copy(update={"shape": (-1, *_row_shape(s.shape, first))}) for s in first.manifest.inputs)
    return load_npz_inputs(options.eval_data, specs, "--eval-data")


def _row_shape(shape: tuple[int, ...], first: VariantSource) -> tuple[int, ...]:
    return shape[1:] if first.manifest.max_batch_size or (shape and shape[0] == 1) else shape


def _eval_scores(runner: edge.EdgeModel, inputs: Arrays, classifier: str) -> np.ndarray[Any, Any]:
    """The classifier's scores of every example: in batches, or one call an example for a model without a batch
    dimension whose input has no leading 1 (its rows are the model's whole input)."""
    if runner.batched or any(s["shape"][:1] == [1] for s in runner.inputs):
        return runner.run(dict(inputs))[classifier]
    rows = len(next(iter(inputs.values())))
    return np.stack([runner.run({k: v[i] for k, v in inputs.items()})[classifier] for i in range(rows)])


def _encode(arrays: Arrays) -> dict[str, Any]:
    return {k: edge.encode_array(v) for k, v in arrays.items()}


def _manifest(
    family: str, first: VariantSource, shared: _Shared, variants: dict[str, dict[str, Any]], out: Path
) -> dict[str, Any]:
    from modelport._version import __version__

    source = first.manifest.source
    paths = sorted(p for p in out.rglob("*") if p.is_file() and p.name != edge.BUNDLE_FILE)
    files = {p.relative_to(out).as_posix(): file_sha256(p) for p in paths}
    processing = {"processing": shared.processing.spec} if shared.processing.spec else {}
    samples = {"samples": shared.processing.samples} if shared.processing.samples else {}
    return {
        "format": "modelport-edge-bundle",
        "schema_version": 1,
        "name": family,
        "version": first.manifest.version,
        "source": source.model_dump(exclude_none=True),
        "inputs": shared.inputs,
        "outputs": shared.outputs,
        "max_batch_size": first.manifest.max_batch_size,  # 0: processed tensors lose their batch dimension of 1
        "labels": shared.labels,
        **processing,
        **samples,
        "default_variant": "float32" if "float32" in variants else next(iter(variants)),
        "variants": variants,
        "files": files,
        "tools": {"modelport": __version__, **{p: _version(p) for p in ("ai-edge-litert", "numpy", "flatbuffers")}},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _archive(out: Path) -> Path:
    return out.parent / f"{out.name}.zip"


def _zip(out: Path) -> Path:
    _archive(out).unlink(missing_ok=True)
    return Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))


def _progress(options: BundleOptions, text: str) -> None:
    if not options.quiet:
        import sys

        print(f"bundle: {text}", file=sys.stderr, flush=True)
