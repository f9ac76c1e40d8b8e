"""modelport_edge.py repeats the server's image and label arithmetic: the two must give the same numbers.

The edge runtime cannot import modelport, so its image steps are a conscious copy of
``modelport.processing.image`` and its labels of ``modelport.processing.postprocess``. These tests
run both on the same images (formats, modes, sizes, EXIF orientation) and steps (every filter,
resize by short side and to a size, crops larger and smaller than the image, mean/std, layouts,
dtypes) and demand identical arrays and responses.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelport.mobile import modelport_edge as edge
from modelport.processing import ProcessingContext, build_processors
from modelport.processing.image import FILTERS
from modelport.processing.spec import ArgmaxStep, ImageStep, ProcessingSpec, ThresholdStep, TopKStep

RNG = np.random.default_rng(17)


def _encoded(mode: str, size: tuple[int, int], fmt: str, orientation: int | None = None) -> bytes:
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "P": 1}[mode]
    pixels = RNG.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode="L" if mode == "P" else mode)
    image = image.convert("P") if mode == "P" else image
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, fmt, exif=exif)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


IMAGES = {
    "rgb-png-64x48": _encoded("RGB", (64, 48), "PNG"),
    "rgba-png-31x70": _encoded("RGBA", (31, 70), "PNG"),
    "gray-png-8x8": _encoded("L", (8, 8), "PNG"),
    "la-png-20x9": _encoded("LA", (20, 9), "PNG"),
    "palette-gif-33x17": _encoded("P", (33, 17), "GIF"),
    "rgb-jpeg-exif-rotated-57x40": _encoded("RGB", (57, 40), "JPEG", orientation=6),
    "rgb-webp-100x100": _encoded("RGB", (100, 100), "WEBP"),
    "rgb-bmp-13x29": _encoded("RGB", (13, 29), "BMP"),
}
STEPS = [
    {"mode": "RGB", "resize": 32, "center_crop": 28, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    {"mode": "RGB", "resize": (24, 40), "interpolation": "bicubic", "layout": "NHWC"},
    {"mode": "L", "resize": (8, 8), "interpolation": "box", "scale": 1 / 255},
    {"mode": "L", "resize": 16, "interpolation": "lanczos", "center_crop": (40, 12), "mean": (0.5,), "std": (0.25,)},
    {"mode": "RGB", "center_crop": 90, "dtype": "float16", "scale": 1.0},
    {"mode": "RGBA", "resize": 9, "interpolation": "hamming", "exif_transpose": False},
    {"mode": "LA", "resize": 50, "interpolation": "nearest", "center_crop": (7, 50), "layout": "NHWC"},
    {"mode": "RGB", "resize": 10, "interpolation": "bilinear", "dtype": "uint8", "scale": 1.0},
]


def _server(step: ImageStep, data: bytes) -> Any:
    processors = build_processors(ProcessingSpec(pre=(step,)), ProcessingContext(Path()))
    [result] = processors.preprocess([data])
    return result


@pytest.mark.parametrize("fields", STEPS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items())[:60])
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_edge_images_are_the_servers_pixels(fields, image):
    step = ImageStep(
        input="x", layout=fields.get("layout", "NCHW"), **{k: v for k, v in fields.items() if k != "layout"}
    )
    server = _server(step, IMAGES[image])
    device = edge.preprocess_image(IMAGES[image], step.model_dump(mode="json"))
    assert device["x"].dtype == server["x"].dtype
    assert device["x"].shape == server["x"].shape
    np.testing.assert_array_equal(device["x"], server["x"])


def test_every_server_filter_exists_on_the_edge():
    data = IMAGES["rgb-png-64x48"]
    for name in FILTERS:
        step = ImageStep(input="x", layout="NCHW", resize=(11, 23), interpolation=name)
        np.testing.assert_array_equal(
            edge.preprocess_image(data, step.model_dump(mode="json"))["x"], _server(step, data)["x"]
        )


@pytest.mark.parametrize(
    "step",
    [
        TopKStep(output="y", k=3, activation="softmax"),
        TopKStep(output="y", k=None),
        TopKStep(output="y", k=4, activation="sigmoid"),
        ArgmaxStep(output="y", activation="softmax"),
        ThresholdStep(output="y", threshold=0.2, activation="sigmoid"),
    ],
    ids=lambda s: f"{s.kind}-{s.activation}",
)
def test_edge_labels_are_the_servers_response(step, tmp_path):
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(7)))
    labelled = step.model_copy(update={"labels": "labels.txt"})
    processors = build_processors(ProcessingSpec(post=(labelled,)), ProcessingContext(tmp_path))
    labels = [f"class {i}" for i in range(7)]
    for scores in RNG.normal(0, 3, (5, 1, 7)).astype(np.float32):
        [server] = processors.postprocess([{"y": scores}])
        device = edge.postprocess(scores, labelled.model_dump(mode="json"), labels)
        assert device == server
        assert list(device) == list(server)  # best first, in the same order


def test_bad_images_are_edge_input_errors():
    step = ImageStep(input="x", layout="NCHW", formats=("PNG",), max_bytes=5000).model_dump(mode="json")
    for data, message in (
        (b"", "empty image"),
        (b"GIF89a" + bytes(100), "not an image in an accepted format (PNG)"),
        (_encoded("RGB", (9, 9), "JPEG"), "not an image in an accepted format"),
        (_encoded("RGB", (200, 200), "PNG"), "over the limit of 5000"),
    ):
        with pytest.raises(edge.EdgeInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
            edge.preprocess_image(data, step)
        assert "object at 0x" not in str(refused.value), "no Python object address in a user's message"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_an_images_base64_text_is_the_image_as_on_the_server(image):
    """The server reads an image's base64 text as the image (TorchServe's vision handlers do): a --sample of it was
    answered by the server, then the bundle crashed with an EdgeInputError traceback decoding it on the device."""
    step = ImageStep(input="x", layout="NHWC", mode="RGB", resize=(6, 5))
    text = base64.b64encode(IMAGES[image]) + b"\n"
    device = edge.preprocess_image(text, step.model_dump(mode="json"))
    np.testing.assert_array_equal(device["x"], _server(step, text)["x"])
    np.testing.assert_array_equal(device["x"], _server(step, IMAGES[image])["x"])


def test_base64_text_that_is_no_image_is_refused_as_on_the_server():
    step = ImageStep(input="x", layout="NHWC")
    assert "nor the base64 text of one" in str(_server(step, b"abcd"))
    with pytest.raises(edge.EdgeInputError, match=r"not an image in an accepted format .*, nor the base64 text of one"):
        edge.preprocess_image(b"abcd", step.model_dump(mode="json"))


class _NeverRun:
    def run(self, feed):
        raise AssertionError(f"the interpreter got { ({k: v.shape for k, v in feed.items()}) }")


def _two_input_model() -> edge.EdgeModel:
    specs = [{"name": "a", "dtype": "float32", "shape": [1, 6]}, {"name": "b", "dtype": "float32", "shape": [1, 3]}]
    bundle = {"inputs": specs, "outputs": [], "variants": {"float32": {"file": "float32.tflite", "inputs": specs}}}
    return edge.EdgeModel(Path("."), bundle, "float32", _NeverRun())


def test_one_array_for_a_two_input_model_names_the_inputs():
    with pytest.raises(edge.EdgeInputError, match=r"2 inputs \(a, b\): pass a dict .*an \.npz"):
        _two_input_model().predict(np.zeros((1, 6), np.float32))


def test_a_tensor_of_another_shape_than_the_variant_takes_never_reaches_the_interpreter():
    """LiteRT's signature runner resizes its input to whatever it is given and computes something else."""
    model = _two_input_model()
    with pytest.raises(edge.EdgeInputError, match=r"input 'b' has shape \[1, 1, 3\], but variant 'float32' takes"):
        model.run({"a": np.zeros((1, 6), np.float32), "b": np.zeros((1, 1, 3), np.float32)})
    with pytest.raises(edge.EdgeInputError, match=r"missing input 'b'"):
        model.run({"a": np.zeros((1, 6), np.float32)})


def test_token_ids_outside_the_value_range_are_refused_as_the_server_refuses_them():
    """LiteRT failed in C++ ("Embedding Lookup: index out of bounds") with a traceback."""
    spec = {"name": "ids", "dtype": "int64", "shape": [1, 4], "value_range": [0.0, 64.0]}
    bundle = {"inputs": [spec], "outputs": [], "variants": {"float32": {"file": "float32.tflite", "inputs": [spec]}}}
    model = edge.EdgeModel(Path("."), bundle, "float32", _NeverRun())
    message = r"input 'ids': value 64 at index \[0, 2\] is outside the model's value range \(0 <= value < 64\)"
    with pytest.raises(edge.EdgeInputError, match=message):
        model.predict(np.array([[0, 63, 64, -1]]))
    with pytest.raises(edge.EdgeInputError, match=r"value -1 at index \[0, 3\]"):
        model.predict(np.array([[0, 63, 1, -1]]))


def test_an_image_for_a_text_bundle_or_a_text_for_an_image_bundle_says_which_it_takes():
    """They said 'the bundle has no text processing (bundle it with processors: a text step)' of an image bundle."""
    specs = [{"name": "x", "dtype": "float32", "shape": [1, 4, 4, 3]}]
    for kind, wrong, message in (
        ("image", "preprocess_text", r"takes images, not text: classify_image\(\) \(predict --image\)"),
        ("text", "preprocess_image", r"takes text, not images: classify_text\(\) \(predict --text\)"),
    ):
        bundle = {"inputs": specs, "outputs": [], "processing": {"pre": [{"kind": kind}]}, "variants": {"f": {}}}
        with pytest.raises(edge.EdgeInputError, match=message):
            getattr(edge.EdgeModel(Path("."), bundle, "f", _NeverRun()), wrong)(b"data")
