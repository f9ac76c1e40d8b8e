"""Tiny application models exported the way users export them (ONNX source -> ``modelport.export``).

- ``colors``: an image classifier. Input ``pixels`` float32 ``[-1, 3, 32, 32]``; the logits are the mean
  of each channel (red, green, blue) and a fourth class ``dark`` scoring ``1 - mean``. Its config.yaml
  resizes and crops any image to 32x32 and answers TorchServe's image_classifier shape (top 2).
- ``sentiment``: a text classifier over a ``tokenizers``-built ``tokenizer.json``: an embedding bag
  (``Gather`` + ``ReduceMean``) of ``input_ids`` int64 ``[-1, -1]`` into two logits; every class scores
  the ids it looked up, so the answer is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import modelport
from modelport.manifest import TensorSpec
from tests.processing.tokenizer import build_tokenizer

COLOR_LABELS = ["red", "green", "blue", "dark"]
IMAGE_PROCESSORS: dict[str, Any] = {
    "pre": [{"kind": "image", "resize": 32, "center_crop": 32, "max_pixels": 30_000_000}],
    "post": [{"kind": "topk", "k": 2, "activation": "softmax"}],
}
TEXT_PROCESSORS: dict[str, Any] = {
    "pre": [{"kind": "text", "max_length": 16, "padding": "longest", "attention_mask": None}],
    "post": [{"kind": "topk", "k": None, "activation": "softmax"}],
}
VOCAB = 200


def _colors_onnx(path: Path) -> Path:
    """logits = [mean R, mean G, mean B, 1 - mean] of a [batch, 3, H, W] image."""
    from onnx import TensorProto, helper, numpy_helper, save

    weights = np.array([[1, 0, 0, -1 / 3], [0, 1, 0, -1 / 3], [0, 0, 1, -1 / 3]], dtype=np.float32)
    bias = np.array([0, 0, 0, 1], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weights", "bias"], ["logits"]),
        ],
        "colors",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _bag_onnx(path: Path) -> Path:
    """logits[b] = mean over the sequence of table[ids[b, s]], table[i] = [i % 7, (i * 3) % 5] / 4."""
    from onnx import TensorProto, helper, numpy_helper, save

    ids = np.arange(VOCAB)
    table = (np.stack([ids % 7, (ids * 3) % 5], axis=1) / 4).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["logits"], keepdims=0),
        ],
        "sentiment",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _export(repo: Path, source: Path, spec: str, name: str) -> Path:
    report = modelport.export(
        source=str(source), formats=("onnx",), inputs=(TensorSpec.parse(spec),), repository=repo, name=name, quiet=True
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    return repo / f"{name}-onnx"


def _configure(model_dir: Path, processors: dict[str, Any] | None, **config: Any) -> None:
    processing = {"processors": processors} if processors is not None else {}
    (model_dir / "config.yaml").write_text(yaml.safe_dump({**processing, **config}))


def add_colors(
    repo: Path, name: str = "colors", processors: dict[str, Any] | None = IMAGE_PROCESSORS, **config: Any
) -> str:
    """The image classifier as ``NAME-onnx`` with labels (``index_to_name.json``); its served name.
    ``processors=None``: served without processors."""
    model_dir = _export(repo, _colors_onnx(repo.parent / f"{name}.onnx"), "pixels:float32:-1x3x32x32", name)
    labels = {str(i): label for i, label in enumerate(COLOR_LABELS)}
    (model_dir / "1" / "index_to_name.json").write_text(json.dumps(labels))
    _configure(model_dir, processors, **config)
    return model_dir.name


def add_sentiment(repo: Path, name: str = "sentiment", processors: dict[str, Any] = TEXT_PROCESSORS) -> str:
    """The text classifier as ``NAME-onnx`` with its ``tokenizer.json`` and ``labels.txt``; its served name."""
    spec = f"input_ids:int64:-1x-1:0..{VOCAB - 1}"
    model_dir = _export(repo, _bag_onnx(repo.parent / f"{name}.onnx"), spec, name)
    build_tokenizer(model_dir / "1" / "tokenizer.json")
    (model_dir / "1" / "labels.txt").write_text("negative\npositive\n")
    _configure(model_dir, processors)
    return model_dir.name


def expected_colors(pixels: np.ndarray) -> dict[str, float]:
    """The top-2 answer of ``colors`` for an image whose processed pixels (HWC, 0..1) are ``pixels``."""
    means = pixels.reshape(-1, 3).mean(axis=0)
    logits = np.array([*means, 1 - means.mean()], dtype=np.float64)
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    best = np.argsort(-scores, kind="stable")[:2]
    return {COLOR_LABELS[i]: float(scores[i]) for i in best}
