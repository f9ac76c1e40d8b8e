"""The export pipeline: load the source, make golden data, convert -> validate -> publish each variant."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, ModelportError, SourceError, SpecError, UnsupportedError, summarize
from modelport.exporters.artifact import Artifact, ConvertContext, convert_variant, quiet_output, supported_formats
from modelport.exporters.options import FORMATS, QUANTIZATIONS, ExportOptions, Variant
from modelport.exporters.probes import data_dependent_dims, rows_independent
from modelport.exporters.publish import (
    Staged,
    check_free,
    check_repository,
    discard,
    model_name,
    next_version,
    publish,
    stage,
)
from modelport.exporters.rejection import failing_outputs, publish_hint
from modelport.exporters.report import ExportReport, ReportRow
from modelport.exporters.source import load_source
from modelport.exporters.source_model import SourceModel
from modelport.exporters.tflite_shapes import check_tflite_shapes
from modelport.exporters.upload import export_to_store
from modelport.golden import GoldenCase, load_npz_inputs, random_inputs, take_rows
from modelport.manifest import ParityRecord, TensorSpec
from modelport.parity import REDUCED_PRECISION, accuracy, compare, default_gate, is_classifier
from modelport.runtimes import open_runtime
from modelport.runtimes.base import Arrays
from modelport.tensors import dtype_of_array, shape_matches

__all__ = ["export", "plan_variants"]

_CHUNK = 64
_AGREEMENT_SAMPLES = 64
_DRAWS = 8  # random golden inputs drawn at most this many times for finite outputs (_defined_case)


@dataclass
class _Reference:
    """Source outputs on the golden cases and on the eval/agreement set."""

    cases: list[GoldenCase]
    outputs: tuple[TensorSpec, ...]
    eval_inputs: Arrays | None
    eval_expected: Arrays | None
    labels: np.ndarray[Any, Any] | None
    compute_dtype: str  # the source's, or float16 when its inputs or outputs are: the gate's tolerance follows it
    notes: tuple[str, ...] = ()  # for every row: what the golden cases say of the source itself
    batched: bool = True  # the source's inputs have a dynamic batch dimension (else a case's first dim is no batch)
    data_dependent: frozenset[tuple[str, int]] = frozenset()  # (output, dim): sizes chosen by the input's values
    rows_independent: bool = True  # each row of a batch answers as it does alone (the server may batch requests)


def export(options: ExportOptions) -> ExportReport:
    """Export ``options.source`` to every requested variant; see ``modelport export --help``.

    A store URL as the repository (``s3://bucket/prefix``) is exported locally, then uploaded."""
    if not isinstance(options.repository, Path):
        return export_to_store(options, export)
    check_repository(options.repository)
    with quiet_output(enabled=options.quiet_converters):  # TF logs from C++ while it loads, before any setting
        source = load_source(options)
    variants = plan_variants(options, source.framework, source.kind)
    check_tflite_shapes(source, options.tflite_shapes, {v.format for v in variants})
    version = options.version or next_version(options, variants)
    check_free(options, variants, version)
    with quiet_output(enabled=options.quiet_converters):
        reference = _reference(source, options, needs_agreement=any(v.quantization for v in variants))
    report = ExportReport(options.name, source.location, source.framework, str(options.repository))
    if reference.labels is not None and reference.eval_expected is not None:
        report.source_accuracy = accuracy(_first_classifier(reference), reference.labels)
    with tempfile.TemporaryDirectory(prefix="modelport-export-") as work:
        calibration = _calibration(reference, options)
        ctx = ConvertContext(
            source, options, Path(work), calibration, reference.data_dependent, reference.rows_independent
        )
        for index, variant in enumerate(variants, 1):
            _progress(options, f"[{index}/{len(variants)}] {variant.name}: converting and validating ...")
            row = _export_variant(ctx, variant, version, reference)
            _progress(options, f"[{index}/{len(variants)}] {variant.name}: {row.status} ({row.seconds:.1f}s)")
            report.rows.append(row)
    report.write(options.folder / ".reports" / f"{options.name}.json")
    return report


def plan_variants(options: ExportOptions, framework: str, kind: str = "") -> list[Variant]:
    """The variants to build, refusing formats/quantizations that do not apply to the framework (or source kind)."""
    available = tuple(f for f in supported_formats(framework) if f not in _NOT_FROM.get(kind, ()))
    wanted = (
        [f for f in FORMATS if f in available] if "all" in options.formats else list(dict.fromkeys(options.formats))
    )
    for fmt in wanted:
        if fmt not in available:
            what = _KIND_NAMES.get(kind, f"a {_FRAMEWORK_NAMES[framework]} source")
            raise UnsupportedError(f"format {fmt!r} does not apply to {what} (it exports to: {', '.join(available)})")
    variants = [Variant(f) for f in wanted]
    for method in options.quantize:
        targets = [f for f in QUANTIZATIONS[method] if f in wanted]
        if not targets:
            raise InvalidArgumentError(
                f"--quantize {method} applies to {'/'.join(QUANTIZATIONS[method])}, none of which is in --format"
            )
        variants += [Variant(f, method) for f in targets]
    return variants


_FRAMEWORK_NAMES = {"torch": "PyTorch", "tf": "TensorFlow/Keras", "onnx": "ONNX"}
# torch.export (behind pt2 and litert-torch's tflite) cannot trace a ScriptModule
_NOT_FROM = {"torchscript": ("pt2", "tflite")}
_KIND_NAMES = {
    "torchscript": "a TorchScript archive: torch.export, behind pt2 and tflite, cannot take a ScriptModule; "
    "export the module itself (package.module:factory) or a .pt2 program for those"
}


def _export_variant(ctx: ConvertContext, variant: Variant, version: int, reference: _Reference) -> ReportRow:
    started = time.perf_counter()
    model = model_name(ctx.options, variant)
    staged: Staged | None = None
    try:
        artifact = convert_variant(ctx, variant)
        cases = [c for c in reference.cases if _fits(artifact.inputs, c.inputs)] or [_case_for(ctx, artifact)]
        staged = stage(ctx, variant, artifact, model, version, reference.outputs, cases)
        parity = _validate(staged, variant, ctx.options, reference, cases)
        row_path = publish(staged, parity, ctx.options)
    except ModelportError as exc:
        discard(staged)
        return ReportRow(
            variant.name, model, version, "ERROR", seconds=time.perf_counter() - started, message=exc.message
        )
    except Exception as exc:  # a converter bug must not lose the other variants
        discard(staged)
        return ReportRow(
            variant.name,
            model,
            version,
            "ERROR",
            seconds=time.perf_counter() - started,
            message=f"unexpected failure: {summarize(exc)}",
        )
    status = "pass" if parity.passed else ("allowed" if ctx.options.allow_mismatch else "FAIL")
    message = failing_outputs(parity)
    if status == "FAIL":
        message += f"; {publish_hint(parity, row_path)}"
    agreement = [o.top1_agreement for o in parity.outputs if o.top1_agreement is not None]
    return ReportRow(
        variant.name,
        model,
        version,
        status,
        size_bytes=staged.size_bytes,
        max_abs_error=max(o.max_abs_error for o in parity.outputs) if parity.outputs else None,
        top1_agreement=min(agreement) if agreement else None,
        accuracy=parity.accuracy,
        seconds=time.perf_counter() - started,
        path=str(row_path),
        message=message,
        notes=(*artifact.notes, *_calibration_notes(variant, ctx.options), *reference.notes),
    )


def _calibration_notes(variant: Variant, options: ExportOptions) -> tuple[str, ...]:
    """An int8 variant calibrated on random golden inputs passed a gate on those inputs too: it says nothing of
    inputs with other ranges (a model that normalizes data of mean 5 and std 3 sees N(0, 1) values)."""
    if variant.quantization not in ("full-int8", "static-int8") or options.calibration_data or options.eval_data:
        return ()
    return (
        "calibrated and gated on random golden inputs, not on data like yours: its int8 ranges may clip real "
        "inputs; pass --calibration-data FILE.npz (or --eval-data) with real inputs",
    )


def _case_for(ctx: ConvertContext, artifact: Artifact) -> GoldenCase:
    """A golden case shaped for an artifact none of the common cases fit (a static shape the user chose)."""
    options = ctx.options
    rng = np.random.default_rng(options.seed)
    inputs = random_inputs(
        artifact.inputs,
        options.batch_sizes[0],
        options.dynamic_sizes[0],
        rng,
        ctx.source.vocabulary,
        ctx.source.string_samples,
    )
    return GoldenCase(inputs, ctx.source.predict(inputs))


def _validate(
    staged: Staged, variant: Variant, options: ExportOptions, ref: _Reference, cases: list[GoldenCase]
) -> ParityRecord:
    # runtimes log from C++ on first use too (LiteRT: "Created TensorFlow Lite XNNPACK delegate", no setting)
    with quiet_output(enabled=options.quiet_converters):
        runtime = open_runtime(staged.directory, staged.manifest)
        try:
            expected = [c.outputs for c in cases]
            actual = [runtime.predict(c.inputs) for c in cases]
            eval_actual: Arrays | None = None
            if ref.eval_inputs is not None and ref.eval_expected is not None:
                eval_actual = _run_chunked(runtime.predict, ref.eval_inputs, staged.manifest.inputs)
                expected, actual = [*expected, ref.eval_expected], [*actual, eval_actual]
        finally:
            runtime.unload()
    record = compare(
        ref.outputs,
        expected,
        actual,
        default_gate(
            variant.format, variant.quantization, options.atol, options.rtol, options.min_agreement, ref.compute_dtype
        ),
        tuple(c.batch_size for c in cases) if ref.batched else (),  # a model without batch dimension: none
    )
    if not cases:
        record = record.model_copy(update={"passed": False})
    if ref.labels is not None and eval_actual is not None:
        name = next(s.name for s in ref.outputs if is_classifier(s))
        source_acc = accuracy(_first_classifier(ref), ref.labels)
        record = record.model_copy(
            update={"accuracy": accuracy(eval_actual[name], ref.labels), "source_accuracy": source_acc}
        )
    return record.model_copy(update={"allow_mismatch": options.allow_mismatch})


def _reference(source: SourceModel, options: ExportOptions, needs_agreement: bool) -> _Reference:
    rng = np.random.default_rng(options.seed)
    eval_inputs, labels = (None, None)
    if options.eval_data is not None:
        eval_inputs, labels = load_npz_inputs(options.eval_data, source.inputs, "--eval-data")
    elif needs_agreement and options.calibration_data is not None:  # agreement on the data the model will see
        eval_inputs, _ = load_npz_inputs(options.calibration_data, source.inputs, "--calibration-data")
    elif needs_agreement:
        eval_inputs = random_inputs(
            source.inputs, _AGREEMENT_SAMPLES, options.dynamic_sizes[0], rng, source.vocabulary, source.string_samples
        )
    batch_dynamic = all(s.shape and s.shape[0] == -1 for s in source.inputs)
    # a first dim dynamic in some inputs only (beside a 0-d scale): no batch to serve, but a size to vary
    leading = not batch_dynamic and any(s.shape and s.shape[0] == -1 for s in source.inputs)
    other_dynamic = any(-1 in s.shape[1:] for s in source.inputs)
    dynamic = options.dynamic_sizes
    plan: list[tuple[int | None, int]]
    if batch_dynamic or leading:  # each batch size, the other dynamic dims taking the sizes in turn
        plan = [(batch, dynamic[i % len(dynamic)]) for i, batch in enumerate(dict.fromkeys(options.batch_sizes))]
    else:  # no batch to vary: a case per dynamic size, so that the outputs' dims that follow them show it
        plan = [(None, size) for size in (dict.fromkeys(dynamic) if other_dynamic else dynamic[:1])]
    # real rows make better golden inputs, unless other dims are dynamic: then vary them at random
    real = eval_inputs if batch_dynamic and not other_dynamic else None
    cases, offset = [], 0
    for batch, size in plan:
        rows = batch or 1
        if real is not None and batch and offset + rows <= _rows(real):
            inputs = take_rows(real, offset, offset + rows)
            offset += rows
            cases.append(GoldenCase(inputs, source.predict(inputs)))
        else:
            cases.append(_defined_case(source, rows, size, rng))
    if batch_dynamic:
        _check_batched_outputs(cases[0], source.inputs)
    eval_expected = _run_chunked(source.predict, eval_inputs, source.inputs) if eval_inputs is not None else None
    probe_rng = np.random.default_rng(options.seed + 1)  # apart from the golden draws, which stay as they were
    varying = data_dependent_dims(source, cases[0], plan[0][0] or 1, plan[0][1], probe_rng)
    outputs = _output_specs(source, cases, varying)
    notes = _constant_notes(cases)
    compute_dtype = _compute_dtype(source, outputs)
    independent = not batch_dynamic or all(rows_independent(source, case) for case in cases)
    return _Reference(
        cases, outputs, eval_inputs, eval_expected, labels, compute_dtype, notes, batch_dynamic, varying, independent
    )


def _constant_notes(cases: list[GoldenCase]) -> tuple[str, ...]:
    """A note when every output of the source is the same for every golden input (each row of each case equal to
    the first): the gate then compares constants and says nothing of the artifact's arithmetic (untrained weights,
    saturated activations, a BatchNorm with random statistics). Outputs without rows (constants) tell nothing."""
    rows: dict[str, list[Any]] = {}
    for case in cases:
        for name, value in case.outputs.items():
            if value.ndim and value.shape[0] == case.batch_size:
                rows.setdefault(name, []).extend(value)
    if not rows or sum(len(r) for r in rows.values()) < 2 * len(rows):
        return ()
    if any(not all(_same(row, found[0]) for row in found[1:]) for found in rows.values()):
        return ()
    return (
        "the source answered the same outputs for every golden input: the parity gate compared constants (untrained "
        "or saturated weights?); pass --eval-data FILE.npz with real inputs, or export trained weights",
    )


def _same(a: Any, b: Any) -> bool:
    """Whether two rows are equal (NaN equal to NaN); a row of a 1-d output is a scalar (bytes of a string)."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _compute_dtype(source: SourceModel, outputs: tuple[TensorSpec, ...]) -> str:
    """The source's compute type, or the reduced float type of one of its inputs or outputs (an ONNX or a
    TorchScript model with float16 tensors does not say what it computes in)."""
    dtypes = [source.compute_dtype, *(s.dtype for s in (*source.inputs, *outputs))]
    return next((d for d in dtypes if d in REDUCED_PRECISION), "float32")


def _defined_case(source: SourceModel, rows: int, dynamic: int, rng: np.random.Generator) -> GoldenCase:
    """A golden case of random inputs the source's outputs are finite for, drawn again (up to
    :data:`_DRAWS` times) while they are not: a NaN from inputs the model is not defined on (an attention mask
    that masks a whole row, the log of 0) says nothing about an artifact's parity, and artifacts may differ there
    (PyTorch's fused attention answers numbers where its reference path answers NaN). A model whose outputs are
    never finite keeps its last draw."""
    for _ in range(_DRAWS):
        inputs = random_inputs(source.inputs, rows, dynamic, rng, source.vocabulary, source.string_samples)
        outputs = _predict_random(source, inputs)
        if all(_finite(value) for value in outputs.values()):
            break
    return GoldenCase(inputs, outputs)


def _predict_random(source: SourceModel, inputs: Arrays) -> Arrays:
    """The source's outputs for random inputs; a source that refuses random strings (it parses them: JPEG images,
    serialized tf.Example protos) fails the export with what to pass instead."""
    try:
        return source.predict(inputs)
    except SourceError as exc:
        strings = [s.name for s in source.inputs if s.dtype == "string"]
        if not strings:
            raise
        raise SourceError(
            f"{exc.message}. Golden inputs for string inputs ({', '.join(strings)}) are random words, which this "
            "model refuses (it decodes or parses them: JPEG images, serialized tf.Example protos?): pass --eval-data "
            "FILE.npz with real inputs, one array per input named as the input (strings as np.bytes_ arrays), with "
            "at least as many rows as --batch-sizes adds up to (4 by default)"
        ) from exc


def _finite(value: np.ndarray[Any, Any]) -> bool:
    return not np.issubdtype(value.dtype, np.inexact) or bool(np.isfinite(value).all())


def _check_batched_outputs(case: GoldenCase, inputs: tuple[TensorSpec, ...]) -> None:
    """Inputs with a dynamic batch dimension: requests are batched and every output is split by rows, so a 0-d
    output (a scalar over the whole batch) cannot be served; say so instead of failing in the split."""
    scalars = [name for name, value in case.outputs.items() if value.ndim == 0]
    if scalars:
        fixed = ", ".join(f"--input {s.name}:{s.dtype}:{'x'.join(['1', *map(str, s.shape[1:])])}" for s in inputs)
        raise SpecError(
            f"outputs {scalars} are 0-d (one value for the whole batch), but the inputs have a dynamic batch "
            f"dimension: served requests are batched and every output is split by rows. Return one value per row, "
            f"or export with a fixed first dimension ({fixed})"
        )


def _output_specs(
    source: SourceModel, cases: list[GoldenCase], varying: frozenset[tuple[str, int]]
) -> tuple[TensorSpec, ...]:
    """Output specs from the source's outputs: dims that vary across golden cases, or with the input's values
    (``varying``), are dynamic, and so is a first dim that is the batch in every case (an output that does not
    follow the batch, a constant, keeps its size)."""
    specs = []
    batched = len(cases) > 1 and all(s.shape and s.shape[0] == -1 for s in source.inputs)
    for name, first in cases[0].outputs.items():
        shapes = [c.outputs[name].shape for c in cases]
        dims = tuple(
            -1 if len({s[i] for s in shapes}) > 1 or (name, i) in varying else d for i, d in enumerate(first.shape)
        )
        if batched and dims and all(c.outputs[name].shape[:1] == (c.batch_size,) for c in cases):
            dims = (-1, *dims[1:])
        specs.append(TensorSpec(name=name, dtype=dtype_of_array(first).name, shape=dims))
    return tuple(specs)


def _run_chunked(predict: Any, inputs: Arrays, specs: tuple[TensorSpec, ...]) -> Arrays:
    """Run ``predict`` over all rows in chunks the model accepts (its fixed batch, else 64)."""
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] != -1}
    chunk = fixed.pop() if fixed else _CHUNK
    parts = [predict(take_rows(inputs, i, i + chunk)) for i in range(0, _rows(inputs), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _calibration(ref: _Reference, options: ExportOptions) -> list[Arrays]:
    """Calibration batches: the user's file, else the eval/agreement inputs, else the golden inputs."""
    if options.calibration_data is not None:
        data, _ = load_npz_inputs(options.calibration_data, tuple(_input_specs(ref)), "--calibration-data")
    elif ref.eval_inputs is not None:
        data = ref.eval_inputs
    else:
        return [c.inputs for c in ref.cases]
    return [take_rows(data, i, i + 16) for i in range(0, min(_rows(data), 256), 16)]


def _input_specs(ref: _Reference) -> list[TensorSpec]:
    first = ref.cases[0].inputs
    return [TensorSpec(name=k, dtype=dtype_of_array(v).name, shape=(-1, *v.shape[1:])) for k, v in first.items()]


def _first_classifier(ref: _Reference) -> np.ndarray[Any, Any]:
    spec = next((s for s in ref.outputs if is_classifier(s)), None)
    if spec is None or ref.eval_expected is None:
        raise InvalidArgumentError("--eval-data has labels but the model has no classifier output ([batch, classes])")
    return ref.eval_expected[spec.name]


def _fits(specs: tuple[TensorSpec, ...], inputs: Arrays) -> bool:
    return all(shape_matches(s.shape, inputs[s.name].shape) for s in specs)


def _rows(arrays: Arrays) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _progress(options: ExportOptions, text: str) -> None:
    if not options.quiet:
        print(text, file=sys.stderr, flush=True)
