"""Models with processors end to end through the HTTP stack (in-process): images and text in every protocol."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.processing.images import encode
from tests.serving.applications import COLOR_LABELS, IMAGE_PROCESSORS, add_colors, add_sentiment, expected_colors
from tests.serving.inprocess import served_in_process

RED = np.array([1.0, 0.0, 0.0])
BLUE = np.array([0.0, 0.0, 1.0])


def solid(color: np.ndarray, size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    pixels = np.tile((color * 255).astype(np.uint8), (size[1], size[0], 1))
    from PIL import Image

    return encode(Image.fromarray(pixels, "RGB"), fmt)


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("applications") / "repo"
    repo.mkdir()
    add_colors(repo)
    add_colors(repo, "raw", processors=None)  # no processors: tensors in and out (classification extension)
    add_sentiment(repo)
    return repo


@pytest.fixture
async def app_plane(app_repo: Path) -> AsyncIterator[DataPlane]:
    plane = build(ServerSettings(repository=app_repo, max_queue_delay_ms=2))
    await plane.start()
    yield plane
    await plane.close()


@pytest.fixture
async def http(app_plane: DataPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(app_plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _close(answer: dict[str, float], expected: dict[str, float]) -> None:
    assert list(answer) == list(expected)
    assert np.allclose(list(answer.values()), list(expected.values()), atol=1e-5)


async def test_metadata_shows_the_external_bytes_input_and_json_output(http):
    meta = (await http.get("/v2/models/colors-onnx")).json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "BYTES", "shape": [-1]}]
    text = (await http.get("/v2/models/sentiment-onnx")).json()
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    raw = (await http.get("/v2/models/raw-onnx")).json()
    assert raw["inputs"][0]["name"] == "pixels" and raw["outputs"][0]["name"] == "logits"


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", None])
async def test_torchserve_raw_body_answers_like_the_image_classifier(http, content_type):
    headers = {"content-type": content_type} if content_type else {}
    answer = await http.post("/predictions/colors-onnx", content=solid(RED), headers=headers)
    assert answer.status_code == 200, answer.text
    _close(answer.json(), expected_colors(RED))


async def test_torchserve_multipart_files_are_rows_answered_in_order(http):
    one = await http.post("/predictions/colors-onnx", files={"data": ("red.png", solid(RED), "image/png")})
    assert one.status_code == 200, one.text
    _close(one.json(), expected_colors(RED))
    files = [("data", ("red.png", solid(RED), "image/png")), ("data", ("blue.jpg", solid(BLUE, fmt="JPEG"), "x"))]
    several = await http.post("/predictions/colors-onnx", files=files)
    assert several.status_code == 200, several.text
    first, second = several.json()
    _close(first, expected_colors(RED))
    assert next(iter(second)) == "blue"


async def test_torchserve_json_base64_images_as_the_vision_handlers_read_them(http):
    red, blue = (base64.b64encode(solid(color)).decode() for color in (RED, BLUE))
    for body in ({"data": red}, {"body": red}, red):
        answer = await http.post("/predictions/colors-onnx", json=body)
        assert answer.status_code == 200, (body, answer.text)
        _close(answer.json(), expected_colors(RED))
    several = await http.post("/predictions/colors-onnx", json=[red, blue])
    assert several.status_code == 200 and [next(iter(row)) for row in several.json()] == ["red", "blue"]
    multipart = await http.post("/predictions/colors-onnx", files={"data": (None, red + "\n")})  # a text field
    assert multipart.status_code == 200, multipart.text
    _close(multipart.json(), expected_colors(RED))
    not_an_image = await http.post("/predictions/colors-onnx", json={"data": base64.b64encode(b"hello!").decode()})
    assert not_an_image.status_code == 400 and "nor the base64 text of one" in not_an_image.json()["message"]


async def test_torchserve_text_as_raw_body_and_json(http):
    raw = await http.post("/predictions/sentiment-onnx", content=b"the cat sat on the mat")
    assert raw.status_code == 200, raw.text
    assert set(raw.json()) == {"negative", "positive"} and abs(sum(raw.json().values()) - 1) < 1e-5
    wrapped = await http.post("/predictions/sentiment-onnx", json={"data": "the cat sat on the mat"})
    assert wrapped.json() == raw.json()
    listed = await http.post("/predictions/sentiment-onnx", json=["the cat sat on the mat", "a bird sang"])
    assert len(listed.json()) == 2 and listed.json()[0] == raw.json()


async def test_v2_json_bytes_in_json_documents_out(http):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["the cat", "a dog"]}]}
    answer = await http.post("/v2/models/sentiment-onnx/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "output" and output["datatype"] == "BYTES" and output["shape"] == [2]
    assert all(set(json.loads(row)) == {"negative", "positive"} for row in output["data"])


async def test_v2_binary_extension_carries_images(http):
    image = triton_http.InferInput("image", [2], "BYTES")
    image.set_data_from_numpy(np.array([solid(RED), solid(BLUE)], dtype=object), binary_data=True)
    wanted = triton_http.InferRequestedOutput("output", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body([image], [wanted])
    answer = await http.post(
        "/v2/models/colors-onnx/infer",
        content=body,
        headers={"inference-header-content-length": str(header_length)},
    )
    assert answer.status_code == 200, answer.text
    result = triton_http.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["inference-header-content-length"])
    )
    rows = [json.loads(row) for row in result.as_numpy("output")]
    _close(rows[0], expected_colors(RED))
    assert next(iter(rows[1])) == "blue"


async def test_tfserving_b64_values_and_bytes_names(http):
    encoded = base64.b64encode(solid(RED)).decode()
    for instances in ([{"b64": encoded}], [{"image_bytes": {"b64": encoded}}]):
        answer = await http.post("/v1/models/colors-onnx:predict", json={"instances": instances})
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        _close(prediction, expected_colors(RED))
    columns = await http.post("/v1/models/sentiment-onnx:predict", json={"inputs": {"text": ["the cat"]}})
    assert columns.status_code == 200 and set(columns.json()["outputs"][0]) == {"negative", "positive"}


async def test_classification_extension_on_a_tensor_model(http):
    pixels = np.zeros((1, 3, 32, 32), np.float32)
    pixels[0, 2] = 1.0  # blue
    body = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": pixels.ravel().tolist()}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }
    answer = await http.post("/v2/models/raw-onnx/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    assert output["data"] == [f"{1.0:f}:2:blue", f"{2 / 3:f}:3:dark"]
    body["outputs"] = [{"name": "logits", "parameters": {"classification": -1}}]
    assert (await http.post("/v2/models/raw-onnx/infer", json=body)).status_code == 400


async def test_processing_is_timed_in_metrics(http):
    assert (await http.post("/predictions/colors-onnx", content=solid(RED))).status_code == 200
    text = (await http.get("/metrics")).text
    for stage in ("preprocess", "postprocess"):
        line = f'modelport_{stage}_duration_seconds_count{{model="colors-onnx",version="1"}} 1.0'
        assert line in text, stage


async def test_a_model_without_processors_keeps_its_tensor_behaviour(http):
    pixels = np.zeros((3, 32, 32), np.float32).tolist()
    answer = await http.post("/predictions/raw-onnx", json=pixels)
    assert answer.status_code == 200 and len(answer.json()) == len(COLOR_LABELS)


def test_the_image_classifier_handler_config_is_accepted(tmp_path):
    """``processors: {handler: image_classifier}`` builds (resize 256, crop 224) for a 224x224 model."""
    from modelport.serving.settings import ModelConfig

    config = ModelConfig.model_validate({"processors": {"handler": "image_classifier"}})
    assert config.processors is not None and config.processors.pre[0].center_crop == 224
    assert IMAGE_PROCESSORS["post"][0]["kind"] == config.processors.post[0].kind


async def test_a_bad_payload_names_the_input_the_client_sent_and_the_models(http):
    image = await http.post("/predictions/colors-onnx", content=b"not an image")
    assert image.status_code == 400
    assert "input 'image' (model input 'pixels'): not an image" in image.json()["message"], image.text
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [{"b64": "/w=="}]}]}
    text = await http.post("/v2/models/sentiment-onnx/infer", json=body)
    assert text.status_code == 400 and "input 'text' (model input 'input_ids'): text is not valid UTF-8" in text.text


def _unbatched_colors_onnx(path: Path) -> Path:
    """``colors`` without a batch dimension (Triton's densenet_onnx kind): pixels 3x32x32 -> logits 4."""
    from onnx import TensorProto, helper, numpy_helper, save

    weights = np.array([[1, 0, 0, -1 / 3], [0, 1, 0, -1 / 3], [0, 0, 1, -1 / 3]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["pixels", "zero"], ["batch"]),
            helper.make_node("GlobalAveragePool", ["batch"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weights", "bias"], ["row"]),
            helper.make_node("Reshape", ["row", "four"], ["logits"]),
        ],
        "colors",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4])],
        [
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.array([0, 0, 0, 1], dtype=np.float32), "bias"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([4], np.int64), "four"),
        ],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


async def test_a_model_without_batch_dimension_takes_one_payload(tmp_path):
    """An image step before data_0 3x224x224 (max_batch_size 0) made [1, 3, 224, 224]: every request was a 400
    ('shape [1, 3, 224, 224] does not match [3, 224, 224]') although the version was ready."""
    import modelport

    repo = tmp_path / "repo"
    report = modelport.export(
        source=str(_unbatched_colors_onnx(tmp_path / "colors.onnx")),
        formats=("onnx",),
        repository=repo,
        name="flat",
        layouts={"pixels": "NCHW"},
        quiet=True,
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    (repo / "flat-onnx" / "1" / "index_to_name.json").write_text(json.dumps(dict(enumerate(COLOR_LABELS))))
    (repo / "flat-onnx" / "config.yaml").write_text(json.dumps({"processors": IMAGE_PROCESSORS}))
    async with served_in_process(repo) as client:
        answer = await client.post("/predictions/flat-onnx", content=solid(RED))
        assert answer.status_code == 200, answer.text
        _close(answer.json(), expected_colors(RED))
        two = await client.post("/predictions/flat-onnx", files=[("data", solid(RED)), ("data", solid(RED))])
        assert two.status_code == 400, two.text
        assert "the model has no batch dimension; send one payload per request, not 2" in two.json()["message"]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"kind": "image", "resize": 32, "layout": "NHWC"}, "(NHWC, 3 channels), but cnhw-onnx takes pixels"),
        ({"kind": "image", "mode": "L"}, "set mode: RGB"),
    ],
)
async def test_an_image_step_that_keeps_the_size_is_checked_for_its_layout_and_mode(tmp_path, step, reason):
    """Only a step that fixed the size was probed at load: an NHWC step before this NCHW model loaded READY and
    every image was a 400 (``shape [1, 32, 42, 3] does not match [-1, 3, 32, 32]``)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    add_colors(repo, "cnhw", processors={**IMAGE_PROCESSORS, "pre": [step]})
    add_colors(repo, "any", processors={**IMAGE_PROCESSORS, "pre": [{"kind": "image", "resize": 32}]})
    async with served_in_process(repo) as client:
        ready = await client.get("/v2/models/cnhw-onnx/ready")
        assert ready.status_code == 503 and reason in ready.text, ready.text
        if step.get("layout"):
            assert "set layout: NCHW" in ready.text, ready.text
        # resize: 32 without a crop keeps the aspect: a square image of the model's size fits, so it serves
        assert (await client.get("/v2/models/any-onnx/ready")).status_code == 200
        answer = await client.post("/predictions/any-onnx", content=solid(RED, size=(32, 32)))
        assert answer.status_code == 200, answer.text


async def test_processors_that_make_what_the_model_cannot_take_leave_the_version_not_ready(tmp_path):
    """An image step cropping to 24x24 before a 32x32 model: the version loaded and every request was a 400;
    now the load says what to set, and the repository's other models serve."""
    repo = tmp_path / "repo"
    repo.mkdir()
    add_colors(repo)
    small = {**IMAGE_PROCESSORS, "pre": [{"kind": "image", "resize": 24, "center_crop": 24}]}
    add_colors(repo, "cropped", processors=small)
    async with served_in_process(repo) as client:
        ready = await client.get("/v2/models/cropped-onnx/ready")
        assert ready.status_code != 200
        assert "resize (and center_crop) to [32, 32]" in ready.text, ready.text
        answer = await client.post("/predictions/colors-onnx", content=solid(RED))
        assert answer.status_code == 200, answer.text
