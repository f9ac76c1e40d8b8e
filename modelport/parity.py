"""Parity gates: compare an artifact's outputs with the source's on the same inputs.

Float artifacts pass when every element satisfies ``|a - e| <= atol + rtol * |e|``.
Reduced-precision artifacts (fp16, int8) record the same errors but are gated on
task agreement: top-1 agreement with the source for classifier outputs (rank 2,
more than one class), a loose tolerance for the other outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ManifestError
from modelport.golden import GOLDEN_FILE, load_golden
from modelport.manifest import ModelManifest, OutputParity, ParityRecord, TensorSpec
from modelport.runtimes.base import Arrays

__all__ = [
    "DEFAULT_TOLERANCES",
    "REDUCED_PRECISION",
    "Gate",
    "accuracy",
    "compare",
    "default_gate",
    "gate_of",
    "is_classifier",
    "top1",
    "verify_golden",
]

# (atol, rtol) per format for float32 artifacts, and per quantization for non-classifier outputs.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "onnx": (1e-4, 1e-3),
    "ort": (1e-4, 1e-3),
    "torchscript": (1e-5, 1e-4),
    "pt2": (1e-5, 1e-4),
    "savedmodel": (1e-5, 1e-4),
    "tflite": (1e-4, 1e-3),
    "float16": (1e-2, 1e-2),
    "dynamic-int8": (1e-1, 1e-1),
    "full-int8": (1e-1, 1e-1),
    "static-int8": (1e-1, 1e-1),
}

# float types whose rounding (float16: ~1e-3 relative) float32 tolerances would take for a mismatch
REDUCED_PRECISION = frozenset({"float16", "bfloat16"})


@dataclass(frozen=True)
class Gate:
    """What an artifact must meet: a tolerance, or task agreement for reduced precision."""

    kind: str
    atol: float
    rtol: float
    min_agreement: float | None = None


def default_gate(
    fmt: str,
    quantization: str | None,
    atol: float | None = None,
    rtol: float | None = None,
    min_agreement: float = 0.99,
    compute_dtype: str = "float32",
) -> Gate:
    """The documented default gate of a format/quantization, with explicit tolerances applied. A source that
    computes in float16/bfloat16 gets float16's tolerance: its artifacts differ from it by a few of those ulps."""
    reduced = compute_dtype in REDUCED_PRECISION and not quantization
    default_atol, default_rtol = DEFAULT_TOLERANCES["float16" if reduced else quantization or fmt]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if quantization:
        return Gate("agreement", atol, rtol, min_agreement)
    return Gate("tolerance", atol, rtol)


def gate_of(record: ParityRecord) -> Gate:
    """The gate a parity record was decided with, to re-check an artifact the same way."""
    return Gate(record.gate, record.atol, record.rtol, record.min_agreement)


def verify_golden(predict: Callable[[Arrays], Arrays], directory: Path, manifest: ModelManifest) -> ParityRecord:
    """Run a version's golden inputs through ``predict`` and judge them with the manifest's own gate."""
    if manifest.parity is None:
        raise ManifestError(f"{directory}: the manifest has no parity record to check golden vectors against")
    path = directory / GOLDEN_FILE
    if not path.exists():
        raise ManifestError(f"{directory}: {GOLDEN_FILE} is missing")
    cases = load_golden(path)
    actual = [predict(case.inputs) for case in cases]
    batches = manifest.parity.batch_sizes  # as the export recorded them (none for a model without batch dimension)
    return compare(manifest.outputs, [c.outputs for c in cases], actual, gate_of(manifest.parity), batches)


def is_classifier(spec: TensorSpec) -> bool:
    """A float output shaped ``[batch, classes]`` with more than one class."""
    return spec.dtype.startswith(("float", "bfloat")) and len(spec.shape) == 2 and spec.shape[1] != 1


def top1(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Index of the highest score per row."""
    return np.asarray(np.argmax(values.reshape(values.shape[0], -1), axis=1))


def accuracy(values: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> float:
    """Share of rows whose top-1 class equals the label."""
    return float(np.mean(top1(values) == labels.reshape(-1)))


def compare(
    specs: tuple[TensorSpec, ...],
    expected: list[Arrays],
    actual: list[Arrays],
    gate: Gate,
    batch_sizes: tuple[int, ...],
) -> ParityRecord:
    """Compare outputs case by case and decide pass/fail per output and overall."""
    results = [_compare_output(spec, expected, actual, gate) for spec in specs]
    return ParityRecord(
        gate="agreement" if gate.kind == "agreement" else "tolerance",
        atol=gate.atol,
        rtol=gate.rtol,
        min_agreement=gate.min_agreement,
        batch_sizes=batch_sizes,
        outputs=tuple(results),
        passed=all(r.passed for r in results),
    )


def _compare_output(spec: TensorSpec, expected: list[Arrays], actual: list[Arrays], gate: Gate) -> OutputParity:
    max_abs = max_rel = 0.0
    within = True
    agree: list[np.ndarray[Any, Any]] = []
    for exp_case, act_case in zip(expected, actual, strict=True):
        exp, act = exp_case[spec.name], act_case.get(spec.name)
        if act is None or act.shape != exp.shape:
            got = "missing" if act is None else f"shape {list(act.shape)}"
            return OutputParity(
                name=spec.name,
                max_abs_error=float("inf"),
                max_rel_error=float("inf"),
                passed=False,
                detail=f"expected shape {list(exp.shape)}, got {got}",
            )
        err, rel, ok = _errors(exp, act, gate)
        max_abs, max_rel, within = max(max_abs, err), max(max_rel, rel), within and ok
        if is_classifier(spec):
            agree.append(top1(exp) == top1(act))
    agreement = float(np.mean(np.concatenate(agree))) if agree else None
    if gate.kind == "agreement" and agreement is not None:
        passed = agreement >= (gate.min_agreement or 0.0)
    else:
        passed = within
    return OutputParity(
        name=spec.name, max_abs_error=max_abs, max_rel_error=max_rel, top1_agreement=agreement, passed=passed
    )


def _errors(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], gate: Gate) -> tuple[float, float, bool]:
    if expected.dtype.kind in ("O", "S", "U", "b"):
        same = bool(np.array_equal(expected, actual))
        return (0.0 if same else 1.0), (0.0 if same else 1.0), same
    exp = expected.astype(np.float64)
    act = actual.astype(np.float64)
    if exp.size == 0:
        return 0.0, 0.0, True
    both_nan = np.isnan(exp) & np.isnan(act)
    diff = np.where(both_nan, 0.0, np.abs(act - exp))
    diff = np.where(np.isnan(diff), np.inf, diff)
    ok = bool(np.all(diff <= gate.atol + gate.rtol * np.abs(np.nan_to_num(exp))))
    rel = diff / (np.abs(np.nan_to_num(exp)) + gate.atol)
    return float(diff.max()), float(rel.max()), ok
