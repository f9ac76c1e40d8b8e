"""A tiny embedding model: an ONNX ``Gather`` over a ``VOCAB x WIDTH`` table, exported the way users export.

Row ``i`` of the table is ``[WIDTH*i, ..., WIDTH*i + WIDTH-1]``, so every output says which ids it looked up.
An id outside ``0..VOCAB`` is what onnxruntime refuses ("indices element out of data bounds").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import modelport
from modelport.manifest import TensorSpec

VOCAB, WIDTH = 1000, 4


def table() -> np.ndarray:
    return np.arange(VOCAB * WIDTH, dtype=np.float32).reshape(VOCAB, WIDTH)


def write_onnx(path: Path) -> Path:
    """``emb[b, s, :] = table[ids[b, s]]`` for int64 ``ids`` [batch, seq], opset 17."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", WIDTH])],
        [numpy_helper.from_array(table(), "table")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def export(repo: Path, name: str, value_range: str = "") -> str:
    """``modelport export`` of the model as ``NAME-onnx`` with ``--input ids:int64:-1x-1[:RANGE]``; its served name."""
    source = write_onnx(repo.parent / f"{name}.onnx")
    spec = TensorSpec.parse("ids:int64:-1x-1" + (f":{value_range}" if value_range else ""))
    report = modelport.export(
        source=str(source), formats=("onnx",), inputs=(spec,), repository=repo, name=name, quiet=True
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    return f"{name}-onnx"
