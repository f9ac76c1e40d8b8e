"""Golden raw samples: recorded as v2 JSON tensors, compared with a tolerance for numbers."""

from __future__ import annotations

import numpy as np

from modelport.samples import check_samples, mismatch, payload_batch, read_samples, record_samples


def _bytes(*values: bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def test_outputs_round_trip_through_samples_json(tmp_path):
    raw = tmp_path / "blob.bin"
    raw.write_bytes(b"\xff\x00payload")
    outputs = {"text": _bytes(b'{"a": 1}', b"\xff\xfe"), "scores": np.array([[0.5, 0.25]], np.float32)}
    record_samples(tmp_path / "v", [raw], lambda data: outputs)
    [sample] = read_samples(tmp_path / "v")
    assert (sample.file, sample.data, sample.content_type) == (
        "samples/1-blob.bin",
        raw.read_bytes(),
        "application/octet-stream",
    )
    assert sample.outputs["text"].tolist() == [b'{"a": 1}', b"\xff\xfe"]
    assert sample.outputs["scores"].dtype == np.float32 and sample.outputs["scores"].tolist() == [[0.5, 0.25]]
    assert check_samples(tmp_path / "v", lambda data: outputs) == ""


def test_numbers_match_within_the_tolerance_and_nothing_else_does():
    recorded = {"out": _bytes(b'{"cat": 0.5, "dog": 0.25}'), "x": np.array([1.0, 2.0])}
    assert mismatch(recorded, {"out": _bytes(b'{"cat":0.5000001,"dog":0.25}'), "x": np.array([1.0, 2.0000001])}) == ""
    assert "element 0" in mismatch(recorded, {"out": _bytes(b'{"cat": 0.6, "dog": 0.25}'), "x": recorded["x"]})
    assert "differs by up to 0.5" in mismatch(recorded, {"out": recorded["out"], "x": np.array([1.0, 2.5])})
    assert "shape [1]" in mismatch(recorded, {"out": recorded["out"], "x": np.array([1.0])})
    assert "missing" in mismatch(recorded, {"out": recorded["out"]})


def test_a_payload_is_a_batch_of_one_bytes_element():
    batch = payload_batch("data", b"raw")
    assert batch["data"].dtype == object and batch["data"].tolist() == [b"raw"]
