"""The processing definition as data: JSON round trips, validation, and config.yaml's processors:."""

from __future__ import annotations

import pytest
import yaml

from modelport.errors import InvalidArgumentError
from modelport.processing import (
    TORCHSERVE_HANDLERS,
    CustomStep,
    ImageStep,
    ProcessingSpec,
    TextStep,
    ThresholdStep,
    TopKStep,
    torchserve_equivalent,
)
from modelport.serving.settings import read_model_config


@pytest.mark.parametrize("name", sorted(TORCHSERVE_HANDLERS))
def test_every_handler_round_trips_through_json(name):
    spec = torchserve_equivalent(name)
    assert ProcessingSpec.from_json(spec.to_json()) == spec


def test_a_full_spec_round_trips_and_keeps_step_kinds():
    spec = ProcessingSpec(
        pre=(ImageStep(resize=(240, 320), interpolation="bicubic", mean=(0.5,), std=(0.5,), mode="L"),),
        post=(ThresholdStep(output="y", threshold=0.3, activation="sigmoid"), CustomStep(callable="post:wrap")),
    )
    again = ProcessingSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.pre[0], ImageStep) and again.pre[0].resize == (240, 320)


def test_from_json_errors_are_invalid_argument_errors():
    with pytest.raises(InvalidArgumentError, match=r"invalid at pre\.0"):
        ProcessingSpec.from_json('{"pre": [{"kind": "video"}]}')


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pre": [{"kind": "image", "resize": 0}]}, "sizes must be positive"),
        ({"pre": [{"kind": "image", "mean": [0.5]}]}, "mean and std go together"),
        ({"pre": [{"kind": "image", "mean": [0.5, 0.5], "std": [1.0]}]}, "mean has 2 values but std has 1"),
        ({"pre": [{"kind": "image", "mean": [0.5], "std": [0.0]}]}, "non-zero"),
        ({"pre": [{"kind": "image", "dtype": "string"}]}, "numeric tensor"),
        ({"pre": [{"kind": "image", "interpolation": "cubic"}]}, "interpolation"),
        ({"pre": [{"kind": "image"}, {"kind": "text"}]}, "at most one image or text step"),
        ({"post": [{"kind": "topk"}, {"kind": "argmax"}]}, "at most one of topk"),
        ({"post": [{"kind": "custom", "callable": "no colon"}]}, "callable"),
        ({"post": [{"kind": "topk", "k": 0}]}, "k"),
        ({"pre": [{"kind": "text", "max_length": 0}]}, "max_length"),
        ({"pre": [{"kind": "image", "size": 3}]}, "size"),
    ],
)
def test_invalid_definitions(data, message):
    with pytest.raises(ValueError, match=message):
        ProcessingSpec.model_validate(data)


def _config(tmp_path, processors):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"max_batch_size": 8, "processors": processors}))
    return read_model_config(tmp_path)


def test_config_yaml_declares_steps(tmp_path):
    config = _config(
        tmp_path,
        {
            "pre": [{"kind": "text", "max_length": 64, "truncation": False, "padding": "longest"}],
            "post": [{"kind": "topk", "k": 3, "activation": "softmax", "labels": "labels.txt"}],
        },
    )
    assert config.processors == ProcessingSpec(
        pre=(TextStep(max_length=64, truncation=False, padding="longest"),),
        post=(TopKStep(k=3, activation="softmax", labels="labels.txt"),),
    )


def test_config_yaml_handler_shorthand(tmp_path):
    assert _config(tmp_path, {"handler": "image_segmenter"}).processors == torchserve_equivalent("image_segmenter")
    assert read_model_config(tmp_path / "absent").processors is None


@pytest.mark.parametrize(
    ("processors", "message"),
    [
        ({"handler": "resnet"}, r"processors: .*unknown TorchServe handler 'resnet'"),
        ({"handler": "image_classifier", "pre": []}, "handler: stands alone; remove pre"),
        ({"handler": 3}, "name of a TorchServe built-in handler"),
        ({"pre": [{"kind": "image", "resize": -1}]}, r"invalid at processors\.pre\.0\.image\.resize"),
        ({"pre": [{"kind": "audio"}]}, r"processors\.pre\.0"),
        ({"steps": []}, r"processors\.steps"),
        ([1, 2], "processors"),
    ],
)
def test_config_yaml_errors_name_the_place(tmp_path, processors, message):
    with pytest.raises(InvalidArgumentError, match=message):
        _config(tmp_path, processors)


def test_an_image_layout_is_read_in_any_case(tmp_path):
    """``modelport export --layout pixels:nhwc`` takes lowercase; so does the image step (it failed the version)."""
    assert ImageStep(layout="nhwc").layout == "NHWC"
    config = _config(tmp_path, {"pre": [{"kind": "image", "layout": "nchw"}]})
    assert config.processors is not None and config.processors.pre[0].layout == "NCHW"
