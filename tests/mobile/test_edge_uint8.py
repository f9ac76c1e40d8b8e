"""A Keras model that takes uint8 pixels (NHWC, resized exactly, no crop, no mean/std), served and bundled with an
image step that names no dtype: the step makes the model's uint8, on the server and on the device.

The step made float32 pixels / 255: every request was a 400 ('datatype FP32 does not match the model's UINT8') and
the bundle failed in the TFLite runtime ('tensor ... is not per-tensor quantized (scales: [])').
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

import modelport
from modelport.errors import InvalidArgumentError
from modelport.mobile import BundleOptions, build_bundle
from modelport.mobile import modelport_edge as edge
from modelport.mobile.tflite_metadata import read_metadata
from tests.processing.images import encode, photo
from tests.serving.inprocess import served_in_process

pytestmark = [pytest.mark.tflite, pytest.mark.tf]

PROCESSORS = {"pre": [{"kind": "image", "resize": [6, 10]}], "post": [{"kind": "topk", "k": 2}]}


def pixels_model() -> Any:
    """uint8 6x10x3 pixels -> / 255 -> conv -> 4 class scores."""
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 10, 3), name="pixels", dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(x))
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


@pytest.fixture(scope="module")
def uint8_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("uint8")
    report = modelport.export(source=pixels_model(), repository=root / "repo", name="u8", formats=("tflite",))
    [row] = report.rows
    assert row.status == "pass", row
    (root / "repo" / "u8-tflite" / "config.yaml").write_text(yaml.safe_dump({"processors": PROCESSORS}))
    samples = []
    for name, image, fmt in (("photo.jpg", photo(31, 17), "JPEG"), ("gray.png", photo(9, 20, "L"), "PNG")):
        samples.append(root / name)
        samples[-1].write_bytes(encode(image, fmt))
    build_bundle(BundleOptions(root / "repo" / "u8", root / "bundle", samples=tuple(samples), quiet=True))
    return root / "repo", samples, root / "bundle"


@pytest.fixture
async def http(uint8_repo) -> AsyncIterator[httpx.AsyncClient]:
    async with served_in_process(uint8_repo[0], max_queue_delay_ms=2) as client:
        yield client


async def test_a_uint8_model_answers_each_image_as_the_server_does(uint8_repo, http):
    _, samples, bundle = uint8_repo
    model = edge.EdgeModel.open(bundle)  # checks the raw samples on the device
    [step] = model.bundle["processing"]["pre"]
    assert (step["dtype"], step["scale"], step["layout"]) == ("uint8", 1.0, "NHWC")
    for sample in samples:
        served = await http.post("/predictions/u8-tflite", content=sample.read_bytes())
        assert served.status_code == 200, served.text
        assert model.classify_image(sample) == pytest.approx(served.json(), abs=1e-6)
        assert list(model.classify_image(sample)) == list(served.json())
    pixels = model.preprocess_image(samples[0])["pixels"]
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 6, 10, 3) and pixels.max() > 1
    metadata = read_metadata((bundle / "float32.tflite").read_bytes())
    assert metadata is not None and (metadata.inputs[0].content, metadata.inputs[0].color_space) == ("image", "RGB")


def test_a_step_making_another_dtype_than_the_model_takes_says_which_to_set(uint8_repo, tmp_path):
    repo, samples, _ = uint8_repo
    processors = tmp_path / "float.yaml"
    processors.write_text(yaml.safe_dump({"pre": [{**PROCESSORS["pre"][0], "dtype": "float32"}]}))
    for given in ((), (samples[0],)):
        options = BundleOptions(repo / "u8", tmp_path / "b", processors=processors, samples=given, quiet=True)
        with pytest.raises(InvalidArgumentError, match=r"as float32, but u8-tflite takes pixels:uint8:.*dtype: uint8"):
            build_bundle(options)


def test_processors_without_a_post_step_record_the_models_outputs_as_the_servers_answer(uint8_repo, tmp_path):
    """The server answers such a model's tensors; the bundle crashed writing them ('ndarray is not JSON
    serializable')."""
    repo, samples, _ = uint8_repo
    processors = tmp_path / "pre.yaml"
    processors.write_text(yaml.safe_dump({"pre": PROCESSORS["pre"]}))
    build_bundle(BundleOptions(repo / "u8", tmp_path / "b", processors=processors, samples=(samples[0],), quiet=True))
    model = edge.EdgeModel.open(tmp_path / "b")  # checks the sample on the device
    [sample] = model.bundle["samples"]
    device = model.run(model.preprocess_image(samples[0]))["logits"]
    assert np.allclose(sample["response"]["logits"], device, atol=1e-6) and device.shape == (1, 4)


@pytest.mark.parametrize("post", [{"kind": "identity"}, {"kind": "segmentation"}, {"kind": "detection"}])
def test_a_post_step_the_device_does_not_run_is_refused(uint8_repo, tmp_path, post):
    """The bundle was built and the device answered top-5 classes where the server answers this step's JSON."""
    repo, samples, _ = uint8_repo
    processors = tmp_path / "p.yaml"
    processors.write_text(yaml.safe_dump({"pre": PROCESSORS["pre"], "post": [post]}))
    options = BundleOptions(repo / "u8", tmp_path / "b", processors=processors, samples=(samples[0],), quiet=True)
    with pytest.raises(InvalidArgumentError, match=f"the {post['kind']} step runs on the server only"):
        build_bundle(options)
    assert not (tmp_path / "b").exists()
