"""Architectures of real deployments that stress the manifest and the protocols, exported as a user would.

- a detector head that keeps the boxes scoring above a threshold (boolean masking): how many rows it answers is
  chosen by the input's values, not its shape. A model of static inputs has one golden case, and the manifest
  declared the one count it happened to answer (``boxes`` 4x4) while the server answered 5x4 or 7x4 for other
  inputs: Triton's configuration and every protocol's metadata said 4. Its TFLite row said only
  "NonConcreteBooleanIndexError: Array boolean indices must be concrete"; it says what TFLite cannot hold.
- a module returning a ``NamedTuple``: litert-torch flattens only plain containers, and the TFLite row was an
  ERROR saying ``TypeError: 'type' object is not iterable``; its outputs were ``output_0``, ``output_1`` where
  the tuple's fields name them (as a dict's keys do).
- a bidirectional LSTM taking its initial state ``(h0, c0)``, ``layers x batch x hidden``, as inputs: the batch is
  not their first dim, the golden draw failed, and the error told the user to pass ``--input h0:float32:-1xNx7``,
  which turned the state's fixed 2 into a dynamic dim; it keeps the 2 and says the batch is pinned in every input.
- ``nn.EmbeddingBag`` over flat ids and the offsets into them: both inputs are ``-1``, so the export took their
  first dims for a batch, published it with ``max_batch_size: 64``, and the ONNX runtime (which runs a CPU batch in
  slices of rows) cut ids and offsets apart: its parity gate failed (max abs error 1.06) where onnxruntime itself
  answers the source exactly, and the server would have batched two requests' ids together. A model whose batch
  rows do not answer as they do alone is published with ``max_batch_size: 0``.
- ``forward(x, mask=None, normalize=True)`` given ``normalize`` as an input: the ONNX exporter made the flag a
  constant (Python branches on it) and left it out of the graph; the gate then failed with "the model rejected the
  input values: Invalid input name: normalize", which blamed the values, and the TorchScript trace took the one
  golden value's side of ``if normalize`` and was published answering it for every request. Both rows now say what
  happened.
- STFT features in the model (``torch.stft``, complex): the TFLite row blamed ``aten.permute`` ("Unsupported ir
  element type: complex<f32>"); it now says the model computes with complex tensors and what converts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import modelport
from modelport.errors import ModelportError
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime
from tests.serving.inprocess import served_in_process

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _detector(batched: bool) -> Any:
    import torch
    from torch import nn

    class Detector(nn.Module):
        """Boxes and scores of the anchors scoring above 0.5 (over the whole batch when batched)."""

        input_specs = ("feat:float32:-1x16x8",) if batched else ("feat:float32:1x16x8",)
        output_names = ("boxes", "scores")

        def __init__(self) -> None:
            super().__init__()
            self.box = nn.Linear(8, 4)
            self.score = nn.Linear(8, 1)

        def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scores = torch.sigmoid(self.score(feat))[..., 0]
            keep = scores > 0.5
            return self.box(feat)[keep], scores[keep]

    torch.manual_seed(0)
    return Detector().eval()


def test_a_detector_is_told_why_tflite_cannot_hold_its_box_count(tmp_path):
    report = modelport.export(source=_detector(False), repository=tmp_path, name="d", formats=("tflite",), quiet=True)
    (row,) = report.rows
    assert row.status == "ERROR"
    assert "the model needs its input's values to know its shapes or its path (boolean masking" in row.message
    assert "return fixed-size outputs (all boxes and a keep mask, or the top k)" in row.message


def _run(model: Any, feat: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(feat))]


@pytest.mark.parametrize("batched", [False, True])
async def test_a_detectors_data_dependent_box_count_is_a_dynamic_dim(tmp_path, batched):
    model = _detector(batched)
    report = modelport.export(source=model, repository=tmp_path, name="det", formats=("onnx", "pt2"), quiet=True)
    assert {r.variant: r.status for r in report.rows} == {"onnx": "pass", "pt2": "pass"}, report.rows
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert [s.describe() for s in manifest.outputs] == ["boxes:float32:-1x4", "scores:float32:-1"], row.variant
        assert manifest.max_batch_size == 0  # the boxes of a batch are not split by rows
    rng = np.random.default_rng(11)
    feats = [rng.standard_normal((2 if batched else 1, 16, 8)).astype(np.float32) for _ in range(4)]
    expected = [_run(model, f) for f in feats]
    assert len({len(e[1]) for e in expected}) > 1  # the inputs keep different numbers of boxes
    async with served_in_process(tmp_path, max_queue_delay_ms=0) as client:
        for name in ("det-onnx", "det-pt2"):
            meta = (await client.get(f"/v2/models/{name}")).json()
            assert [o["shape"] for o in meta["outputs"]] == [[-1, 4], [-1]], meta
            for feat, (boxes, scores) in zip(feats, expected, strict=True):
                body = {
                    "inputs": [
                        {"name": "feat", "shape": list(feat.shape), "datatype": "FP32", "data": feat.ravel().tolist()}
                    ]
                }
                reply = await client.post(f"/v2/models/{name}/infer", json=body)
                assert reply.status_code == 200, reply.text
                outputs = {o["name"]: o for o in reply.json()["outputs"]}
                assert outputs["boxes"]["shape"] == list(boxes.shape)
                np.testing.assert_allclose(np.reshape(outputs["boxes"]["data"], boxes.shape), boxes, atol=1e-5)
                np.testing.assert_allclose(outputs["scores"]["data"], scores, atol=1e-5)


def _two_heads() -> Any:
    import torch
    from torch import nn

    class Heads(NamedTuple):
        logits: torch.Tensor
        embedding: torch.Tensor

    class TwoHeads(nn.Module):
        input_specs = ("x:float32:-1x6",)

        def __init__(self) -> None:
            super().__init__()
            self.logits = nn.Linear(6, 3)
            self.embedding = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> Heads:
            return Heads(self.logits(x), self.embedding(x))

    torch.manual_seed(0)
    return TwoHeads().eval()


def test_a_named_tuples_fields_name_its_outputs_and_it_converts_to_tflite(tmp_path):
    import torch

    model = _two_heads()
    formats = ("torchscript", "tflite")
    report = modelport.export(source=model, repository=tmp_path, name="heads", formats=formats, quiet=True)
    assert {r.variant: r.status for r in report.rows} == {"torchscript": "pass", "tflite": "pass"}, report.rows
    x = np.random.default_rng(5).standard_normal((1, 6)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    for row in report.rows:
        directory = Path(row.path)
        manifest = read_manifest(directory)
        assert [(o.name, o.shape[1:]) for o in manifest.outputs] == [("logits", (3,)), ("embedding", (2,))]
        runtime = open_runtime(directory, manifest)
        try:
            actual = runtime.predict({"x": x})
        finally:
            runtime.unload()
        np.testing.assert_allclose(actual["logits"], expected.logits.numpy(), atol=1e-5, err_msg=row.variant)
        np.testing.assert_allclose(actual["embedding"], expected.embedding.numpy(), atol=1e-5, err_msg=row.variant)


def _bilstm() -> Any:
    import torch
    from torch import nn

    class BiLSTM(nn.Module):
        input_specs = ("x:float32:-1x-1x5", "h0:float32:2x-1x7", "c0:float32:2x-1x7")
        output_names = ("output", "h", "c")

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)

        def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> Any:
            return self.lstm(x, (h0, c0))  # (output, (h, c))

    torch.manual_seed(0)
    return BiLSTM().eval()


def test_an_lstm_with_its_initial_state_as_inputs_is_told_to_pin_the_batch_then_answers_its_state(tmp_path):
    import torch

    with pytest.raises(ModelportError) as caught:
        modelport.export(source=_bilstm(), repository=tmp_path, name="lstm", formats=("pt2",), quiet=True)
    message = caught.value.message
    assert "--input h0:float32:2xNx7 --input c0:float32:2xNx7" in message, message
    assert "takes the batch pinned, in every input" in message, message
    pinned = ("x:float32:1x-1x5", "h0:float32:2x1x7", "c0:float32:2x1x7")
    report = modelport.export(
        source=_bilstm(), inputs=pinned, repository=tmp_path, name="lstm", formats=("torchscript", "pt2"), quiet=True
    )
    assert {r.variant: r.status for r in report.rows} == {"torchscript": "pass", "pt2": "pass"}, report.rows
    rng = np.random.default_rng(2)
    inputs = {
        n: rng.standard_normal(s).astype(np.float32)
        for n, s in (("x", (1, 11, 5)), ("h0", (2, 1, 7)), ("c0", (2, 1, 7)))
    }
    with torch.no_grad():
        output, (h, c) = _bilstm()(*(torch.from_numpy(v) for v in inputs.values()))
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert [s.describe() for s in manifest.outputs] == [
            "output:float32:1x-1x14", "h:float32:2x1x7", "c:float32:2x1x7"
        ], row.variant  # fmt: skip
        runtime = open_runtime(Path(row.path), manifest)
        try:
            actual = runtime.predict(inputs)
        finally:
            runtime.unload()
        for name, value in (("output", output), ("h", h), ("c", c)):
            np.testing.assert_allclose(actual[name], value.numpy(), atol=1e-5, err_msg=f"{row.variant} {name}")


def _bag() -> Any:
    import torch
    from torch import nn

    class Bag(nn.Module):
        input_specs = ("ids:int64:-1:0..20", "offsets:int64:-1:0..1")
        output_names = ("pooled",)

        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(20, 4, mode="mean")

        def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            return self.bag(ids, offsets)

    torch.manual_seed(0)
    return Bag().eval()


def test_an_embedding_bag_over_offsets_is_not_batched_and_its_onnx_answers_the_source(tmp_path):
    import torch

    model = _bag()
    report = modelport.export(source=model, repository=tmp_path, name="bag", formats=("onnx", "pt2"), quiet=True)
    assert {r.variant: r.status for r in report.rows} == {"onnx": "pass", "pt2": "pass"}, report.rows
    inputs = {"ids": np.array([1, 2, 3, 4, 5, 19]), "offsets": np.array([0, 2, 3])}
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs["ids"]), torch.from_numpy(inputs["offsets"])).numpy()
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert manifest.max_batch_size == 0, row.variant
        runtime = open_runtime(Path(row.path), manifest)
        try:
            actual = runtime.predict(inputs)
        finally:
            runtime.unload()
        np.testing.assert_allclose(actual["pooled"], expected, atol=1e-5, err_msg=row.variant)


def _flagged() -> Any:
    import torch
    from torch import nn

    class Flagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
            y = self.fc(x)
            if mask is not None:
                y = y * mask
            return torch.softmax(y, -1) if normalize else y

    torch.manual_seed(0)
    return Flagged().eval()


def test_optional_keyword_inputs_export_and_a_python_flag_given_as_an_input_is_named(tmp_path):
    inputs = ("x:float32:-1x6", "mask:float32:-1x3")
    report = modelport.export(
        source=_flagged(), inputs=inputs, repository=tmp_path, name="m", formats=("onnx",), quiet=True
    )
    assert [r.status for r in report.rows] == ["pass"], report.rows
    assert [s.name for s in read_manifest(Path(report.rows[0].path)).inputs] == ["x", "mask"]
    flag = ("x:float32:-1x6", "normalize:bool:1")
    formats = ("onnx", "torchscript")
    report = modelport.export(
        source=_flagged(), inputs=flag, repository=tmp_path, name="f", formats=formats, quiet=True
    )
    rows = {r.variant: r for r in report.rows}
    assert [r.status for r in report.rows] == ["ERROR", "ERROR"], report.rows
    assert "the exported ONNX graph has no input 'normalize': the exporter made it a constant" in rows["onnx"].message
    # the trace took the golden input's side of `if normalize` and answered it whatever a request sent
    assert "the TorchScript trace does not read input 'normalize'" in rows["torchscript"].message


def _spectrogram() -> Any:
    import torch
    from torch import nn

    class Spectrogram(nn.Module):
        input_specs = ("wave:float32:-1x128",)
        output_names = ("magnitude",)

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("window", torch.hann_window(32))

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return torch.stft(wave, 32, hop_length=16, window=self.window, return_complex=True).abs()

    return Spectrogram().eval()


def test_an_stft_model_is_told_tflite_has_no_complex_type_and_its_other_formats_publish(tmp_path):
    formats = ("pt2", "tflite")
    report = modelport.export(source=_spectrogram(), repository=tmp_path, name="stft", formats=formats, quiet=True)
    rows = {r.variant: r for r in report.rows}
    assert rows["pt2"].status == "pass", rows["pt2"]
    assert [s.describe() for s in read_manifest(Path(rows["pt2"].path)).outputs] == ["magnitude:float32:-1x17x9"]
    assert rows["tflite"].status == "ERROR"
    assert "the model computes with complex tensors (torch.stft, torch.fft)" in rows["tflite"].message
