"""TorchServe built-in handler equivalents: the same transforms and the same response shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelport.errors import InvalidArgumentError
from modelport.processing import (
    TORCHSERVE_HANDLERS,
    DetectionStep,
    ImageStep,
    ProcessingContext,
    SegmentationStep,
    TextStep,
    TopKStep,
    build_processors,
    torchserve_equivalent,
)
from tests.processing import reference
from tests.processing.images import encode, photo
from tests.processing.tokenizer import build_tokenizer


def test_the_four_handlers_are_defined():
    assert sorted(TORCHSERVE_HANDLERS) == ["image_classifier", "image_segmenter", "object_detector", "text_classifier"]
    with pytest.raises(InvalidArgumentError, match="unknown TorchServe handler 'densenet'"):
        torchserve_equivalent("densenet")


def test_image_classifier_transforms_are_torchserves_own():
    [image] = torchserve_equivalent("image_classifier").pre
    assert isinstance(image, ImageStep)
    assert (image.resize, image.center_crop, image.interpolation) == (256, 224, "bilinear")
    assert (image.mean, image.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert image.scale == 1 / 255 and image.layout == "NCHW" and not image.exif_transpose
    [topk] = torchserve_equivalent("image_classifier").post
    assert isinstance(topk, TopKStep) and (topk.k, topk.activation) == (5, "softmax")


@pytest.mark.torch
def test_image_classifier_end_to_end_matches_torchserve(tmp_path):
    import torch

    mapping = {str(i): f"class{i}" for i in range(10)}
    (tmp_path / "index_to_name.json").write_text(json.dumps(mapping))
    spec = torchserve_equivalent("image_classifier")
    processors = build_processors(
        spec.model_copy(update={"post": (spec.post[0].model_copy(update={"output": "y"}),)}),
        ProcessingContext(tmp_path),
    )
    images = [photo(320, 240, seed=1), photo(200, 480, seed=2)]
    [first, second] = processors.preprocess([encode(i, "PNG") for i in images])
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for ours, image in zip((first, second), images, strict=True):
        expected = reference.tv_normalize(
            reference.tv_to_tensor(reference.tv_center_crop(reference.tv_resize(image, 256), 224)), mean, std
        )
        assert np.array_equal(ours["input"][0], expected.numpy())
    weights = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    logits = [(w @ x["input"].mean(axis=(2, 3)).T).T for x, w in ((first, weights), (second, weights))]
    responses = processors.postprocess([{"y": row} for row in logits])
    expected = reference.ts_image_classifier_postprocess(torch.from_numpy(np.concatenate(logits)), mapping)
    assert [list(r) for r in responses] == [list(r) for r in expected]


def test_segmenter_detector_and_text_classifier_shapes():
    segmenter = torchserve_equivalent("image_segmenter")
    assert segmenter.pre == torchserve_equivalent("image_classifier").pre
    assert isinstance(segmenter.post[0], SegmentationStep)
    [to_tensor] = torchserve_equivalent("object_detector").pre
    assert isinstance(to_tensor, ImageStep) and to_tensor.resize is None and to_tensor.center_crop is None
    assert not to_tensor.normalize and to_tensor.scale == 1 / 255
    [detection] = torchserve_equivalent("object_detector").post
    assert isinstance(detection, DetectionStep) and detection.threshold == 0.5
    text = torchserve_equivalent("text_classifier")
    assert isinstance(text.pre[0], TextStep)
    assert isinstance(text.post[0], TopKStep) and text.post[0].k is None and text.post[0].activation == "softmax"


def test_object_detector_keeps_the_original_image_size(tmp_path):
    processors = build_processors(torchserve_equivalent("object_detector"), ProcessingContext(tmp_path))
    [tensors] = processors.preprocess([encode(photo(33, 21), "PNG")])
    assert tensors["input"].shape == (1, 3, 21, 33) and tensors["input"].max() <= 1.0


def test_text_classifier_end_to_end(tmp_path):
    build_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "index_to_name.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    spec = torchserve_equivalent("text_classifier")
    spec = spec.model_copy(update={"post": (spec.post[0].model_copy(update={"output": "logits"}),)})
    processors = build_processors(spec, ProcessingContext(tmp_path))
    a, b = processors.preprocess(["the cat", "the dog chased the cat"])
    assert a["input_ids"].shape == b["input_ids"].shape == (1, 7)
    [response] = processors.postprocess([{"logits": np.array([[0.0, np.log(3.0)]], np.float32)}])
    assert list(response) == ["negative", "positive"]
    assert response["positive"] == pytest.approx(0.75)
