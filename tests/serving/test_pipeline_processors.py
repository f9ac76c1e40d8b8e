"""Processor steps of pipelines over real exported models, written as a user follows the README.

A ``pre`` step makes the tensors of the model input it feeds, as that model's own processors would
(the token ids in the model's integer dtype, an image in the model's layout and normalization); a
``post`` classifier reads its step's mapped tensor without naming it; a bad payload is a 400 naming the
pipeline's input, the one the client sent.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from tokenizers import Tokenizer

import modelport
from modelport.manifest import TensorSpec, read_manifest, write_manifest
from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.processing.images import encode, photo
from tests.processing.reference import tv_center_crop, tv_resize
from tests.processing.tokenizer import build_tokenizer
from tests.serving.applications import add_colors

VOCAB = 200
MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.25, 2.0)


def _bag32(path: Path) -> Path:
    """logits[b] = mean over the sequence of table[ids[b, s]], ids int32 (table[i] = [i % 7, i % 5, i % 3])."""
    from onnx import TensorProto, helper, numpy_helper, save

    ids = np.arange(VOCAB)
    table = np.stack([ids % 7, ids % 5, ids % 3], axis=1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["logits"], keepdims=0),
        ],
        "bag32",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _channel_means_nhwc(path: Path) -> Path:
    """means[b, c] = the mean of channel c of a [batch, H, W, 3] (NHWC) image."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixels", "axes"], ["means"], keepdims=0)],
        "means",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 8, 6, 3])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _export(repo: Path, source: Path, spec: str, name: str) -> Path:
    report = modelport.export(
        source=str(source), formats=("onnx",), inputs=(TensorSpec.parse(spec),), repository=repo, name=name, quiet=True
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    return repo / f"{name}-onnx" / "1"


def _as_keras_would_record(version: Path) -> None:
    """The NHWC model's manifest says its layout and normalization, as a Keras export records them."""
    manifest = read_manifest(version)
    (pixels,) = manifest.inputs
    inputs = (pixels.model_copy(update={"layout": "NHWC", "mean": MEAN, "std": STD}),)
    write_manifest(manifest.model_copy(update={"inputs": inputs}), version)


def _pipeline(repo: Path, name: str, pipeline: dict[str, Any]) -> Path:
    (repo / name).mkdir(parents=True)
    (repo / name / "config.yaml").write_text(yaml.safe_dump({"pipeline": pipeline}))
    return repo / name


TEXT_PIPELINE = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "answer", "datatype": "BYTES", "shape": [-1]}],
    "steps": [
        {
            "processors": {"pre": [{"kind": "text", "max_length": 12, "attention_mask": None}]},
            "input_map": {"sentence": "text"},
            "output_map": {"input_ids": "ids"},
        },
        {"model": "bag32-onnx", "input_map": {"input_ids": "ids"}, "output_map": {"logits": "logits"}},
        {
            "processors": {"post": [{"kind": "topk", "k": 2, "activation": "softmax"}]},  # reads its one input
            "input_map": {"logits": "logits"},
            "output_map": {"output": "answer"},
        },
    ],
}
TOP1 = {
    "processors": {"post": [{"kind": "topk", "k": 1, "activation": "softmax"}]},
    "input_map": {"logits": "logits"},
    "output_map": {"output": "best"},
}
# several external outputs: the top-k JSON beside the raw logits, and two JSON outputs
JSON_AND_TENSOR = {
    **TEXT_PIPELINE,
    "outputs": [*TEXT_PIPELINE["outputs"], {"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
}
TWO_JSON = {
    **TEXT_PIPELINE,
    "outputs": [*TEXT_PIPELINE["outputs"], {"name": "best", "datatype": "BYTES", "shape": [-1]}],
    "steps": [*TEXT_PIPELINE["steps"], TOP1],
}
IMAGE_PIPELINE = {
    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "means", "datatype": "FP32", "shape": [-1, 3]}],
    "steps": [
        {
            "processors": {"pre": [{"kind": "image", "resize": 6, "center_crop": [8, 6]}]},
            "input_map": {"payload": "image"},
            "output_map": {"input": "pixels"},
        },
        {"model": "means-onnx", "input_map": {"pixels": "pixels"}, "output_map": {"means": "means"}},
    ],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-processors")
    repo = root / "repo"
    _export(repo, _bag32(root / "bag32.onnx"), f"input_ids:int32:-1x-1:0..{VOCAB}", "bag32")
    _as_keras_would_record(_export(repo, _channel_means_nhwc(root / "means.onnx"), "pixels:float32:-1x8x6x3", "means"))
    for name, pipeline in (("sentiment", TEXT_PIPELINE), ("sentiment-logits", JSON_AND_TENSOR), ("top", TWO_JSON)):
        build_tokenizer(_pipeline(repo, name, pipeline) / "tokenizer.json")
        (repo / name / "labels.txt").write_text("low\nmid\nhigh\n")
    (_pipeline(repo, "tint", IMAGE_PIPELINE) / "labels.txt").write_text("red\ngreen\nblue\n")
    colors = add_colors(repo)  # a step model with processors of its own: payloads in, JSON out
    wrap = {"model": colors, "input_map": {"image": "picture"}, "output_map": {"output": "answer"}}
    _pipeline(
        repo,
        "wrapped",
        {
            "inputs": [{"name": "picture", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "answer", "datatype": "BYTES", "shape": [-1]}],
            "steps": [wrap],
        },
    )
    grey = {"kind": "image", "mode": "L", "resize": 6, "center_crop": [8, 6]}  # 1 channel for a 3-channel model
    _pipeline(
        repo,
        "grey",
        {
            **IMAGE_PIPELINE,
            "steps": [{**IMAGE_PIPELINE["steps"][0], "processors": {"pre": [grey]}}, IMAGE_PIPELINE["steps"][1]],
        },
    )
    nchw = {"kind": "image", "resize": 6, "center_crop": [8, 6], "layout": "NCHW"}  # for an NHWC model
    _pipeline(
        repo,
        "nchw",
        {
            **IMAGE_PIPELINE,
            "steps": [{**IMAGE_PIPELINE["steps"][0], "processors": {"pre": [nchw]}}, IMAGE_PIPELINE["steps"][1]],
        },
    )
    return repo


@pytest.fixture
async def client(repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    plane: DataPlane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await plane.close()


def _expected_text(repo: Path, text: str, name: str = "sentiment") -> dict[str, float]:
    tokens = Tokenizer.from_file(str(repo / name / "tokenizer.json")).encode(text).ids
    ids = np.array(tokens + [0] * (12 - len(tokens)))  # padded to max_length with [PAD] (id 0)
    logits = np.stack([ids % 7, ids % 5, ids % 3], axis=1).astype(np.float32).mean(axis=0)
    scores = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    best = np.argsort(-scores, kind="stable")[:2]
    return {["low", "mid", "high"][i]: float(scores[i]) for i in best}


async def test_ready_with_the_tokens_in_the_models_int32_and_topk_reading_its_input(client: httpx.AsyncClient) -> None:
    ready = await client.get("/v2/models/sentiment/ready")
    assert ready.status_code == 200, (await client.post("/v2/repository/index", json={})).text


@pytest.mark.parametrize("text", ["the cat sat on the mat", "a bird", ""])
async def test_text_pipeline_answers_as_the_tokenizer_and_model_do(
    client: httpx.AsyncClient, repo: Path, text: str
) -> None:
    answer = await client.post("/predictions/sentiment", content=text.encode(), headers={"content-type": "text/plain"})
    assert answer.status_code == 200, answer.text
    expected = _expected_text(repo, text)
    assert list(answer.json()) == list(expected)
    assert np.allclose(list(answer.json().values()), list(expected.values()), rtol=1e-5)


async def test_text_that_is_not_utf8_is_a_400_naming_the_pipelines_input(client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}
    assert (await client.post("/v2/models/sentiment/infer", json=body)).status_code == 200
    answer = await client.post("/predictions/sentiment", content=b"\xff\xfe", headers={"content-type": "text/plain"})
    assert answer.status_code == 400 and "input 'text'" in answer.json()["message"], answer.text


@pytest.mark.parametrize(("width", "height"), [(13, 9), (6, 8), (5, 17)])
async def test_image_pipeline_feeds_the_nhwc_model_in_its_layout_and_normalization(
    client: httpx.AsyncClient, width: int, height: int
) -> None:
    image = photo(width, height, seed=width)
    answer = await client.post("/predictions/tint", content=encode(image), headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json(), _means(image), atol=1e-5), (answer.json(), _means(image))


async def test_a_bad_image_is_a_400_naming_the_pipelines_input(client: httpx.AsyncClient) -> None:
    answer = await client.post("/predictions/tint", content=b"not an image", headers={"content-type": "image/png"})
    assert answer.status_code == 400 and "input 'image'" in answer.json()["message"], answer.text
    truncated = encode(photo(40, 30), "JPEG")[:200]
    answer = await client.post("/predictions/tint", content=truncated, headers={"content-type": "image/jpeg"})
    assert answer.status_code == 400 and "input 'image'" in answer.json()["message"], answer.text


def _means(image: Image.Image) -> list[float]:
    pixels = np.asarray(tv_center_crop(tv_resize(image, 6), (8, 6)), dtype=np.float32) / np.float32(255)
    return ((pixels - np.float32(MEAN)) / np.float32(STD)).mean(axis=(0, 1)).tolist()  # type: ignore[no-any-return]


async def test_several_files_are_rows_in_order_in_every_protocol(client: httpx.AsyncClient) -> None:
    images = [photo(13, 9, seed=1), photo(9, 13, seed=2).convert("L"), photo(30, 30, seed=3).convert("RGBA")]
    files = [encode(images[0]), encode(images[1], "JPEG"), encode(images[2], "WEBP", lossless=True)]
    expected = [_means(image.convert("RGB")) for image in images]
    expected[1] = _means(Image.open(io.BytesIO(files[1])).convert("RGB"))  # JPEG is lossy
    multipart = await client.post("/predictions/tint", files=[("data", (f"{i}", f)) for i, f in enumerate(files)])
    assert multipart.status_code == 200, multipart.text
    assert np.allclose(multipart.json(), expected, atol=1e-5)
    b64 = [{"b64": base64.b64encode(f).decode()} for f in files]
    tfs = await client.post("/v1/models/tint:predict", json={"instances": [{"image_bytes": v} for v in b64]})
    assert tfs.status_code == 200 and np.allclose(tfs.json()["predictions"], expected, atol=1e-5), tfs.text


async def test_a_pre_step_that_cannot_fit_the_model_it_feeds_leaves_the_pipeline_not_ready(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(2):  # the reason is remembered, and said again
        ready = await client.get("/v2/models/grey/ready")
        assert ready.status_code == 503, ready.text
        assert "step 1 (processors): image step for 'input': 3 mean/std values for mode L" in ready.json()["reason"]
    refused = await client.post("/predictions/grey", content=encode(photo(8, 6)), headers={"content-type": "image/png"})
    assert refused.status_code == 503 and "mean/std" in refused.json()["message"], refused.text
    assert (await client.get("/v2/models/tint/ready")).status_code == 200


async def test_a_pre_step_making_what_the_model_it_feeds_cannot_take_leaves_the_pipeline_not_ready(
    client: httpx.AsyncClient,
) -> None:
    """A probe image runs through a pre step when the pipeline is built, as through a model's own processors: an
    NCHW step before an NHWC model was READY, and every image a 400 (shape [1, 3, 8, 6] does not match ...)."""
    ready = await client.get("/v2/models/nchw/ready")
    assert ready.status_code == 503, ready.text
    reason = ready.json()["reason"]
    assert reason.startswith("step 1 (processors): image step: the processors make input 'input'"), reason
    assert "set layout: NHWC" in reason, reason
    assert (await client.get("/v2/models/tint/ready")).status_code == 200


async def test_triton_classification_of_a_pipeline_output_names_its_folders_labels(client: httpx.AsyncClient) -> None:
    image = photo(13, 9, seed=4)
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [{"b64": base64.b64encode(encode(image)).decode()}],
            }
        ],
        "outputs": [{"name": "means", "parameters": {"classification": 2}}],
    }
    answer = await client.post("/v2/models/tint/infer", json=body)
    assert answer.status_code == 200, answer.text
    means = _means(image)
    best = np.argsort(-np.array(means), kind="stable")[:2]
    got = [entry.split(":") for entry in answer.json()["outputs"][0]["data"]]
    assert [(int(i), label) for _, i, label in got] == [(int(i), ["red", "green", "blue"][i]) for i in best]
    assert np.allclose([float(v) for v, _, _ in got], [means[i] for i in best], atol=1e-5)


async def test_a_processed_step_models_json_is_answered_decoded(client: httpx.AsyncClient) -> None:
    image = encode(photo(20, 16, seed=5))
    direct = await client.post("/predictions/colors-onnx", content=image)
    assert direct.status_code == 200 and isinstance(direct.json(), dict), direct.text
    wrapped = await client.post("/predictions/wrapped", content=image)
    assert wrapped.status_code == 200 and wrapped.json() == direct.json(), wrapped.text
    tfs = await client.post(
        "/v1/models/wrapped:predict", json={"instances": [{"b64": base64.b64encode(image).decode()}]}
    )
    assert tfs.status_code == 200 and tfs.json()["predictions"] == [direct.json()], tfs.text


async def test_a_step_models_400_names_the_pipelines_input_the_client_sent(client: httpx.AsyncClient) -> None:
    answer = await client.post("/predictions/wrapped", content=b"not an image")
    assert answer.status_code == 400, answer.text
    assert "input 'picture' (model input 'pixels'): not an image" in answer.json()["message"], answer.text


def _logits(repo: Path, text: str, name: str) -> list[float]:
    tokens = Tokenizer.from_file(str(repo / name / "tokenizer.json")).encode(text).ids  # each pipeline's own
    ids = np.array(tokens + [0] * (12 - len(tokens)))
    return np.stack([ids % 7, ids % 5, ids % 3], axis=1).astype(np.float32).mean(axis=0).tolist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["sentiment-logits", "top"])
async def test_several_outputs_answer_json_outputs_as_json_on_torchserve_and_tf_serving(
    client: httpx.AsyncClient, repo: Path, name: str
) -> None:
    """A post step's JSON beside a tensor (or a second JSON output): each JSON output answers as the JSON
    value, as a lone one does, on every protocol that answers JSON (v2 keeps BYTES: strings of JSON)."""
    texts = ["good movie", "a terrible plot"]
    answers = [_expected_text(repo, t, name) for t in texts]
    second = "logits" if name == "sentiment-logits" else "best"
    seconds = (
        [_logits(repo, t, name) for t in texts]
        if second == "logits"
        else [dict([next(iter(a.items()))]) for a in answers]
    )

    def same(got: dict[str, Any], i: int) -> None:
        assert set(got) == {"answer", second}, got
        assert list(got["answer"]) == list(answers[i]), got
        assert np.allclose(list(got["answer"].values()), list(answers[i].values()), rtol=1e-5)
        if second == "logits":
            assert np.allclose(got["logits"], seconds[i], rtol=1e-5)
        else:
            assert list(got["best"]) == list(seconds[i]) and np.allclose(
                list(got["best"].values()), list(seconds[i].values()), rtol=1e-5
            )

    one = await client.post(f"/predictions/{name}", content=texts[0].encode(), headers={"content-type": "text/plain"})
    assert one.status_code == 200, one.text
    same(one.json(), 0)
    both = await client.post(f"/predictions/{name}", json=texts)
    assert both.status_code == 200 and len(both.json()) == 2, both.text
    for i, got in enumerate(both.json()):
        same(got, i)
    rows = await client.post(f"/v1/models/{name}:predict", json={"instances": texts})
    assert rows.status_code == 200, rows.text
    for i, got in enumerate(rows.json()["predictions"]):
        same(got, i)
    columns = await client.post(f"/v1/models/{name}:predict", json={"inputs": texts})
    assert columns.status_code == 200, columns.text
    outputs = columns.json()["outputs"]
    for i in range(2):
        same({key: outputs[key][i] for key in outputs}, i)
    v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}]}
    infer = await client.post(f"/v2/models/{name}/infer", json=v2)
    assert infer.status_code == 200, infer.text
    (answer,) = [o for o in infer.json()["outputs"] if o["name"] == "answer"]
    assert answer["datatype"] == "BYTES" and all(isinstance(v, str) for v in answer["data"]), answer
