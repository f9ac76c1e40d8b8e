"""The ONNX runtime runs a CPU batch whose rows take long in slices of a few rows, and answers as for the whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.errors import RejectedInputError
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
from modelport.runtimes import onnx
from modelport.runtimes.base import RuntimeOptions
from modelport.runtimes.onnx import OnnxRuntime
from tests.serving import embedding


class _Recorded:
    """A session that records the rows of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.rows: list[int] = []

    def run(self, fetch: list[str], feed: dict[str, Any]) -> Any:
        self.rows.append(len(feed["ids"]))
        return self.session.run(fetch, feed)


def _runtime(folder: Path, max_batch_size: int = 64) -> tuple[OnnxRuntime, _Recorded]:
    embedding.write_onnx(folder / "model.onnx")
    manifest = ModelManifest(
        name="emb",
        version=1,
        family="emb",
        variant="onnx",
        format="onnx",
        artifact="model.onnx",
        inputs=(TensorSpec(name="ids", dtype="int64", shape=(-1, -1)),),
        outputs=(TensorSpec(name="emb", dtype="float32", shape=(-1, -1, embedding.WIDTH)),),
        max_batch_size=max_batch_size,
        source=SourceInfo(framework="onnx", kind="file", location="test"),
    )
    runtime = OnnxRuntime(folder, manifest, RuntimeOptions(intra_op_threads=1))
    runtime.load()
    recorded = runtime.session = _Recorded(runtime.session)
    return runtime, recorded


def _ids(rows: int) -> np.ndarray:
    return np.arange(rows * 3, dtype=np.int64).reshape(rows, 3) % embedding.VOCAB


def test_rows_that_take_long_run_in_slices_joined_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row alone takes longer than a run should: one row a run, the outputs joined as for the whole batch."""
    monkeypatch.setattr(onnx, "RUN_SECONDS", 0.0)
    runtime, session = _runtime(tmp_path)
    ids = _ids(7)
    assert np.array_equal(runtime.predict({"ids": ids})["emb"], embedding.table()[ids])
    assert session.rows == [1] * 7


def test_rows_that_are_quick_run_whole_after_the_first_timed_row(tmp_path: Path) -> None:
    """A model of microseconds a row: the first batch times one row, then the rest runs at once, as later batches."""
    runtime, session = _runtime(tmp_path)
    for rows in (64, 64, 1):
        ids = _ids(rows)
        assert np.array_equal(runtime.predict({"ids": ids})["emb"], embedding.table()[ids])
    assert session.rows == [1, 63, 64, 1]


def test_a_model_without_a_batch_dimension_runs_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx, "RUN_SECONDS", 0.0)
    runtime, session = _runtime(tmp_path, max_batch_size=0)
    ids = _ids(5)
    assert np.array_equal(runtime.predict({"ids": ids})["emb"], embedding.table()[ids])
    assert session.rows == [5]


def test_a_slice_the_model_rejects_rejects_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a whole batch: the batcher then isolates the request at fault."""
    monkeypatch.setattr(onnx, "RUN_SECONDS", 0.0)
    runtime, _ = _runtime(tmp_path)
    ids = _ids(4)
    ids[2, 1] = embedding.VOCAB + 5
    with pytest.raises(RejectedInputError, match="out of data bounds"):
        runtime.predict({"ids": ids})
