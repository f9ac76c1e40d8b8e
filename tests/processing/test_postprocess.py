"""Postprocessing: activations, labels files, top-k / argmax / threshold / identity, masks, boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelport.errors import InferenceError, InvalidArgumentError, NotFoundError, SpecError
from modelport.processing import (
    ArgmaxStep,
    DetectionStep,
    IdentityStep,
    ProcessingContext,
    SegmentationStep,
    ThresholdStep,
    TopKStep,
)
from modelport.processing.labels import Labels, find_labels, read_labels
from modelport.processing.postprocess import (
    ClassifierProcessor,
    DetectionProcessor,
    IdentityProcessor,
    SegmentationProcessor,
    activate,
)
from tests.processing import reference

LOGITS = np.array([[1.0, 3.0, 0.5, 3.0, -2.0, 0.0, 2.5]], np.float32)


def test_softmax_and_sigmoid():
    probabilities = activate(LOGITS[0], "softmax")
    assert probabilities.dtype == np.float32 and probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    expected = np.exp(LOGITS[0] - 3.0) / np.exp(LOGITS[0] - 3.0).sum()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        assert activate(np.array([-1000.0, 0.0, 1000.0], np.float32), "sigmoid").tolist() == [0.0, 0.5, 1.0]
    assert activate(np.array([1, 2]), "none").dtype == np.float32


def test_labels_files(tmp_path):
    (tmp_path / "index_to_name.json").write_text(json.dumps({"0": "cat", "2": ["n02", "dog"]}))
    (tmp_path / "labels.txt").write_text("zero\none\n")
    (tmp_path / "old.json").write_text(json.dumps({"object_type_names": ["a", "b"]}))
    assert read_labels(tmp_path / "index_to_name.json").names == {0: "cat", 2: "dog"}
    assert read_labels(tmp_path / "labels.txt").names == {0: "zero", 1: "one"}
    assert read_labels(tmp_path / "old.json").names == {0: "a", 1: "b"}
    assert Labels({0: "cat"})(5) == "5"
    (tmp_path / "gap.txt").write_text("a\n\nc\n")  # line i names class i; a blank line names none
    assert read_labels(tmp_path / "gap.txt").names == {0: "a", 2: "c"} and read_labels(tmp_path / "gap.txt")(1) == "1"


def test_bad_or_missing_labels_files(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"0": 3}))
    (tmp_path / "list.json").write_text("[1, 2]")
    for name in ("bad.json", "list.json"):
        with pytest.raises(InvalidArgumentError, match="not an index -> name mapping"):
            read_labels(tmp_path / name)
    with pytest.raises(NotFoundError, match="no labels file"):
        find_labels("nope.txt", ProcessingContext(tmp_path), None)


def test_default_labels_prefer_index_to_name_json(tmp_path):
    context = ProcessingContext(tmp_path)
    assert find_labels(None, context, None).names == {}
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert find_labels(None, context, None).names == {0: "a", 1: "b"}
    (tmp_path / "index_to_name.json").write_text('{"0": "x"}')
    assert find_labels(None, context, None).names == {0: "x"}


def _classify(tmp_path, step, outputs):
    return ClassifierProcessor(step, ProcessingContext(tmp_path))([{"logits": o} for o in outputs])


@pytest.mark.torch
def test_topk_matches_torchserve_image_classifier(tmp_path):
    import torch

    mapping = {str(i): f"class{i}" for i in range(7)}
    (tmp_path / "index_to_name.json").write_text(json.dumps(mapping))
    logits = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    ours = _classify(tmp_path, TopKStep(output="logits", activation="softmax"), [row[None] for row in logits])
    expected = reference.ts_image_classifier_postprocess(torch.from_numpy(logits), mapping)
    assert [list(r) for r in ours] == [list(r) for r in expected]
    for mine, theirs in zip(ours, expected, strict=True):
        assert list(mine.values()) == pytest.approx(list(theirs.values()), abs=1e-7)


def test_topk_orders_best_first_breaking_ties_by_index(tmp_path):
    [result] = _classify(tmp_path, TopKStep(output="logits", k=3), [LOGITS])
    assert list(result.items()) == [("1", 3.0), ("3", 3.0), ("6", 2.5)]
    [everything] = _classify(tmp_path, TopKStep(output="logits", k=50), [LOGITS])
    assert len(everything) == 7
    [in_order] = _classify(tmp_path, TopKStep(output="logits", k=None), [LOGITS])
    assert list(in_order) == [str(i) for i in range(7)]


def test_topk_and_threshold_rank_as_a_stable_sort_of_every_score(tmp_path):
    """The top k come from a partial sort: the same classes in the same order as a full stable sort, with ties
    (many equal scores) and NaN scores (last)."""
    rng = np.random.default_rng(3)
    for trial in range(200):
        width = int(rng.integers(1, 30))
        scores = rng.integers(0, 4, width).astype(np.float32) if trial % 2 else rng.normal(size=width)
        if trial % 5 == 0:
            scores[rng.integers(0, width, 2)] = np.nan
        ranked = [str(i) for i in np.argsort(-scores, kind="stable")]
        for k in (1, 3, width, width + 2):
            [top] = _classify(tmp_path, TopKStep(output="logits", k=k), [scores[None]])
            assert list(top) == ranked[:k], (scores, k)
        [above] = _classify(tmp_path, ThresholdStep(output="logits", threshold=1.0), [scores[None]])
        assert list(above) == [i for i in ranked if scores[int(i)] >= 1.0], scores


def test_argmax_and_threshold(tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join("abcdefg"))
    [best] = _classify(tmp_path, ArgmaxStep(output="logits"), [LOGITS])
    assert best == {"label": "b", "index": 1, "score": 3.0}
    [multi] = _classify(tmp_path, ThresholdStep(output="logits", activation="sigmoid", threshold=0.9), [LOGITS])
    assert list(multi) == ["b", "d", "g"] and all(v >= 0.9 for v in multi.values())


def test_classifier_errors(tmp_path):
    with pytest.raises(SpecError, match="name the output"):
        ClassifierProcessor(TopKStep(), ProcessingContext(tmp_path))
    processor = ClassifierProcessor(TopKStep(output="logits"), ProcessingContext(tmp_path))
    wrong_name, two_rows = processor([{"other": LOGITS}, {"logits": np.zeros((2, 3), np.float32)}])
    assert isinstance(wrong_name, InferenceError) and "needs output 'logits'" in wrong_name.message
    assert isinstance(two_rows, InferenceError) and "more than one request" in two_rows.message


def test_identity_drops_the_batch_dimension(tmp_path):
    outputs = {"a": np.array([[1, 2]]), "b": np.array([[0.5]], np.float32)}
    assert IdentityProcessor(IdentityStep(), ProcessingContext(tmp_path))([outputs]) == [{"a": [1, 2], "b": [0.5]}]
    assert IdentityProcessor(IdentityStep(outputs=("b",)), ProcessingContext(tmp_path))([outputs]) == [{"b": [0.5]}]


@pytest.mark.torch
def test_segmentation_matches_torchserve_image_segmenter(tmp_path):
    import torch

    scores = np.random.default_rng(1).normal(size=(3, 5, 4, 6)).astype(np.float32)
    processor = SegmentationProcessor(SegmentationStep(output="out"), ProcessingContext(tmp_path))
    ours = processor([{"out": row[None]} for row in scores])
    expected = reference.ts_image_segmenter_postprocess({"out": torch.from_numpy(scores)})
    for mine, theirs in zip(ours, expected, strict=True):
        mine_a, theirs_a = np.array(mine), np.array(theirs)
        assert mine_a.shape == theirs_a.shape == (4, 6, 2)
        assert np.array_equal(mine_a[..., 0], theirs_a[..., 0])
        np.testing.assert_allclose(mine_a[..., 1], theirs_a[..., 1], rtol=1e-6)


def test_segmentation_shape_error(tmp_path):
    processor = SegmentationProcessor(SegmentationStep(output="out"), ProcessingContext(tmp_path))
    [error] = processor([{"out": np.zeros((5, 4, 6), np.float32)}])
    assert isinstance(error, InferenceError) and "expected (1, classes, H, W)" in error.message


def _detections(seed):
    rng = np.random.default_rng(seed)
    n = 6
    return {
        "boxes": rng.uniform(0, 100, size=(n, 4)).astype(np.float32),
        "labels": rng.integers(1, 4, size=n).astype(np.int64),
        "scores": np.array([0.9, 0.2, 0.5, 0.7, 0.49, 0.95], np.float32),
    }


@pytest.mark.torch
def test_detection_matches_torchserve_object_detector(tmp_path):
    import torch

    mapping = {"1": "person", "2": "bicycle", "3": "car"}
    (tmp_path / "index_to_name.json").write_text(json.dumps(mapping))
    rows = [_detections(0), _detections(1)]
    ours = DetectionProcessor(DetectionStep(), ProcessingContext(tmp_path))(rows)
    expected = reference.ts_object_detector_postprocess(
        [{k: torch.from_numpy(v) for k, v in row.items()} for row in rows], mapping
    )
    assert ours == expected
    assert len(ours[0]) == 4  # scores >= 0.5


def test_detection_accepts_a_batch_dimension_and_checks_shapes(tmp_path):
    processor = DetectionProcessor(DetectionStep(), ProcessingContext(tmp_path))
    row = _detections(2)
    batched, broken = processor([{k: v[None] for k, v in row.items()}, {**row, "labels": row["labels"][:2]}])
    kept = [str(c) for c, s in zip(row["labels"], row["scores"], strict=True) if s >= 0.5]
    assert [next(iter(d)) for d in batched] == kept
    assert isinstance(broken, InferenceError) and "expected (n, 4), (n,), (n,)" in broken.message
