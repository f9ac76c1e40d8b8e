"""Export beyond CNNs: MLPs, LSTM/GRU classifiers and transformer encoders, in both frameworks, to every format.

Each zoo model (tests/export/zoo.py) is exported once per module to every format its
framework supports; the tests then pin the exact outcome of every variant, the
interface each published manifest declares, and that published artifacts with a
dynamic sequence length really accept a length the parity gate never tried.

Every variant passes. Two shapes are static by design and pinned below:
- torch -> tflite (litert-torch) converts at the first batch size and dynamic size
  (batch 1, sequence 8): its dynamic batch bakes reshape targets.
- keras LSTM -> tflite has batch 1 and a dynamic sequence: TFLite lowers the LSTM's
  while loop (TensorList ops) only with a static per-step shape [batch, units]
  ("'tf.TensorListReserve' op requires element_shape to be static"), and Flex ops are
  not available in LiteRT, so the Keras model is re-exported with the batch fixed.
Each pinned input is a note on the variant's report row (``--tflite-shape`` chooses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.exporters.options import ExportOptions
from modelport.exporters.report import ExportReport
from modelport.manifest import TensorSpec, read_manifest
from modelport.runtimes import open_runtime
from tests.export import zoo

TORCH_FORMATS = frozenset({"onnx", "torchscript", "pt2", "tflite", "ort"})
KERAS_FORMATS = frozenset({"onnx", "savedmodel", "tflite", "ort"})
FRESH_LENGTH = 11  # a sequence length the golden cases (8 and 5) never use


@dataclass(frozen=True)
class Case:
    """A zoo model and what its export must produce."""

    framework: str
    builder: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    passing: frozenset[str]
    # variant -> substrings its ERROR message must hold (converter, op): upstream limitations only
    errors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # variant -> input shapes its manifest declares where they differ from the source's
    static: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)


CASES = {
    "torch-mlp": Case(
        "torch", zoo.torch_mlp, zoo.MLP_INPUTS, ("logits",), TORCH_FORMATS, static={"tflite": ((1, 12),)}
    ),
    "torch-lstm": Case(
        "torch", zoo.torch_rnn, zoo.RNN_INPUTS, ("logits",), TORCH_FORMATS, static={"tflite": ((1, 8),)}
    ),
    "torch-gru": Case("torch", zoo.torch_gru, zoo.RNN_INPUTS, ("logits",), TORCH_FORMATS, static={"tflite": ((1, 8),)}),
    "torch-encoder": Case(
        "torch",
        zoo.torch_encoder,
        zoo.ENCODER_INPUTS,
        ("logits", "hidden"),
        TORCH_FORMATS,
        static={"tflite": ((1, 8), (1, 8))},
    ),
    "keras-mlp": Case("tf", zoo.keras_mlp, zoo.MLP_INPUTS, ("logits",), KERAS_FORMATS),
    "keras-lstm": Case("tf", zoo.keras_rnn, zoo.RNN_INPUTS, ("logits",), KERAS_FORMATS, static={"tflite": ((1, -1),)}),
    "keras-encoder": Case("tf", zoo.keras_encoder, zoo.ENCODER_INPUTS, ("logits", "hidden"), KERAS_FORMATS),
}


@dataclass(frozen=True)
class Exported:
    """One zoo model, exported once for the whole module."""

    case: Case
    model: Any
    report: ExportReport

    @property
    def rows(self) -> dict[str, Any]:
        return {row.variant: row for row in self.report.rows}


def _param(name: str) -> Any:
    framework = pytest.mark.torch if CASES[name].framework == "torch" else pytest.mark.tf
    return pytest.param(name, marks=[framework, pytest.mark.tflite], id=name)


@pytest.fixture(scope="module", params=[_param(name) for name in CASES])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    name = request.param
    case = CASES[name]
    model = case.builder()
    flags = tuple(TensorSpec.parse(s) for s in case.inputs) if case.framework == "tf" else ()
    options = ExportOptions(source=model, repository=tmp_path_factory.mktemp(name), name=name, inputs=flags, quiet=True)
    return Exported(case, model, modelport.export(options))


def test_every_variant_has_its_expected_outcome(exported):
    case, rows = exported.case, exported.rows
    assert set(rows) == set(case.passing) | set(case.errors)
    outcomes = {variant: (row.status, row.message) for variant, row in rows.items()}
    assert {v for v, (status, _) in outcomes.items() if status == "pass"} == set(case.passing), outcomes
    for variant, needles in case.errors.items():
        status, message = outcomes[variant]
        assert status == "ERROR", (variant, status, message)
        assert all(n in message for n in needles), (variant, message)


def test_published_manifests_declare_the_interface(exported):
    case = exported.case
    specs = [TensorSpec.parse(s) for s in case.inputs]
    for variant in case.passing:
        manifest = read_manifest(Path(exported.rows[variant].path))
        shapes = case.static.get(variant, tuple(s.shape for s in specs))
        assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
            (s.name, s.dtype, shape) for s, shape in zip(specs, shapes, strict=True)
        ], variant
        assert tuple(o.name for o in manifest.outputs) == case.outputs, variant
        assert manifest.parity is not None and manifest.parity.passed, variant
        pinned = [n for n in exported.rows[variant].notes if "--tflite-shape" in n]  # the report says so
        assert len(pinned) == (sum(s.shape != p for s, p in zip(specs, shapes, strict=True))), (variant, pinned)


def test_dynamic_sequence_length_beyond_the_golden_cases(exported):
    case = exported.case
    checked = []
    for variant in case.passing:
        manifest = read_manifest(Path(exported.rows[variant].path))
        if not any(-1 in s.shape[1:] for s in manifest.inputs):
            continue
        batch = manifest.inputs[0].shape[0] if manifest.inputs[0].shape[0] != -1 else 2
        inputs = _token_inputs(manifest.inputs, batch, FRESH_LENGTH)
        runtime = open_runtime(Path(exported.rows[variant].path), manifest)
        try:
            actual = runtime.predict(inputs)
        finally:
            runtime.unload()
        expected = _source_outputs(exported, inputs)
        for name in case.outputs:
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-4, rtol=1e-3, err_msg=variant)
        checked.append(variant)
    if case.inputs[0].count("-1") > 1:  # a sequence model: every float format but static tflite is checked
        assert set(checked) == case.passing - {v for v, s in case.static.items() if -1 not in s[0][1:]}


def _token_inputs(specs: tuple[TensorSpec, ...], batch: int, length: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, zoo.VOCAB, (batch, length)).astype(np.int64)
    mask = (rng.random((batch, length)) < 0.7).astype(np.int64)
    return {s.name: ids if s.name == "ids" else mask for s in specs}


def _source_outputs(exported: Exported, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    case, model = exported.case, exported.model
    names = [TensorSpec.parse(s).name for s in case.inputs]
    if case.framework == "torch":
        import torch

        with torch.no_grad():
            result = model(*(torch.from_numpy(inputs[n]) for n in names))
        values = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
    else:
        result = model([inputs[n] for n in names] if len(names) > 1 else inputs[names[0]], training=False)
        values = [np.asarray(t) for t in (result if isinstance(result, list | tuple) else [result])]
    return dict(zip(case.outputs, values, strict=True))
