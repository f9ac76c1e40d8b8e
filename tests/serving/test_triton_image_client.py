"""Triton's quickstart image classification flow against models exported as a user would.

``densenet_onnx``: a small PyTorch CNN with Triton's densenet_onnx tensors (``data_0`` FP32 3x224x224 NCHW, no
batch dimension; ``fc6_1`` FP32 1000). ``inception_graphdef``: a Keras model with inception_graphdef's (``input``
299x299x3 NHWC, ``InceptionV3/Predictions/Softmax`` 1001, max_batch_size 128). Both are exported with
``modelport export --layout`` and a labels file beside them. The test makes the calls Triton's
``image_client.py`` (tritonclient, HTTP and gRPC, sync, async and streaming) and ``grpc_image_client.py`` (the
raw gRPC stubs) make: metadata and configuration parsed as they parse them, images resized, scaled and ordered
by the configured format, the classification extension's "score:index:label" strings read back.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.manifest import read_manifest
from tests.serving.processes import serving
from tests.user_cli import run_modelport

DENSENET = "densenet_onnx"
INCEPTION = "inception_graphdef"
UNLAID = "densenet_nolayout"
OUTPUTS = {DENSENET: "fc6_1", INCEPTION: "InceptionV3/Predictions/Softmax", UNLAID: "fc6_1"}
CLASSES = 3

STANDINS = """
import keras
import torch


class DenseNetStandIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 7, stride=4)
        self.fc = torch.nn.Linear(8, 1000)

    def forward(self, data_0):
        x = torch.relu(self.conv(data_0.unsqueeze(0))).mean(dim=(2, 3))
        return self.fc(x).reshape(1000)


def densenet():
    torch.manual_seed(0)
    return DenseNetStandIn().eval()


def inception():
    keras.utils.set_random_seed(0)
    image = keras.Input((299, 299, 3), name="input")
    x = keras.layers.Conv2D(8, 7, strides=8, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # logits far apart: the top classes do not swap places between a batch of one and of two
    spread = keras.initializers.RandomNormal(stddev=20)
    dense = keras.layers.Dense(1001, activation="softmax", kernel_initializer=spread)
    return keras.Model(image, dense(x))
"""


@dataclass(frozen=True)
class Parsed:
    """What image_client's parse_model takes from the metadata and the configuration."""

    max_batch_size: int
    input_name: str
    output_name: str
    chw: tuple[int, int, int]
    format: int
    datatype: str


def _labels(count: int, prefix: str) -> list[str]:
    return [f"{prefix} {i}" for i in range(count)]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    user = tmp_path_factory.mktemp("imgclient")
    (user / "standins.py").write_text(STANDINS)
    common = ("--format", "onnx", "--repository", "repo", "--quiet")
    exports = [
        ("standins.py:densenet", "--input", "data_0:float32:3x224x224", "--layout", "data_0:NCHW"),
        ("standins.py:inception", "--layout", "input:NHWC", "--max-batch-size", "128"),
    ]
    exports.append(("standins.py:densenet", "--input", "data_0:float32:3x224x224"))  # no --layout
    for name, (source, *flags) in zip((DENSENET, INCEPTION, UNLAID), exports, strict=True):
        done = run_modelport(
            "export",
            source,
            *flags,
            *common,
            "--output",
            OUTPUTS[name],
            "--name",
            name,
            "--name-template",
            name,
            cwd=user,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    (user / "repo" / DENSENET / "1" / "labels.txt").write_text("\n".join(_labels(1000, "dense")) + "\n")
    (user / "repo" / INCEPTION / "1" / "labels.txt").write_text("\n".join(_labels(1001, "incep")) + "\n")
    return user / "repo"


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[tuple[str, str]]:
    with serving(repository, timeout=120) as served:
        yield served.url.removeprefix("http://"), served.grpc


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three images of other sizes than the models take (the client resizes them)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    paths = []
    for i, size in enumerate(((320, 240), (200, 300), (256, 256))):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_export_records_the_layouts_in_the_manifests(repository: Path) -> None:
    densenet = read_manifest(repository / DENSENET / "1")
    assert (densenet.max_batch_size, densenet.inputs[0].shape, densenet.inputs[0].layout) == (0, (3, 224, 224), "NCHW")
    inception = read_manifest(repository / INCEPTION / "1")
    assert (inception.max_batch_size, inception.inputs[0].shape) == (128, (-1, 299, 299, 3))
    assert inception.inputs[0].layout == "NHWC" and inception.outputs[0].name == OUTPUTS[INCEPTION]


def _parse(metadata: Any, config: Any) -> Parsed:
    """image_client's checks: one input and output, FP32 vector output, 3 image dims past the batch, NCHW/NHWC."""
    import tritonclient.grpc.model_config_pb2 as mc

    assert len(metadata.inputs) == 1 and len(metadata.outputs) == 1 and len(config.input) == 1
    assert metadata.outputs[0].datatype == "FP32"
    batched = config.max_batch_size > 0
    assert sum(1 for d in list(metadata.outputs[0].shape)[int(batched) :] if d > 1) == 1
    shape = list(metadata.inputs[0].shape)
    assert len(shape) == 3 + int(batched)
    fmt = config.input[0].format
    fmt = mc.ModelInput.Format.Value(fmt) if isinstance(fmt, str) else fmt
    if fmt not in (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC):
        raise ValueError(
            f"unexpected input format {mc.ModelInput.Format.Name(fmt)}, expecting FORMAT_NCHW or FORMAT_NHWC"
        )
    dims = shape[int(batched) :]
    chw = (dims[0], dims[1], dims[2]) if fmt == mc.ModelInput.FORMAT_NCHW else (dims[2], dims[0], dims[1])
    return Parsed(
        config.max_batch_size, metadata.inputs[0].name, metadata.outputs[0].name, chw, fmt, metadata.inputs[0].datatype
    )


class _Attrs(dict[str, Any]):
    """The attribute access image_client gets from AttrDict on the HTTP client's JSON (a missing key raises)."""

    def __getattr__(self, name: str) -> Any:
        value = self[name]
        if isinstance(value, dict):
            return _Attrs(value)
        if isinstance(value, list):
            return [_Attrs(v) if isinstance(v, dict) else v for v in value]
        return value


def _model(protocol: str, url: str, name: str) -> tuple[Any, Parsed]:
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        client: Any = grpcclient.InferenceServerClient(url=url)
        parsed = _parse(client.get_model_metadata(name, ""), client.get_model_config(name, "").config)
    else:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url=url, concurrency=20)
        parsed = _parse(_Attrs(client.get_model_metadata(name, "")), _Attrs(client.get_model_config(name, "")))
    return client, parsed


def _preprocess(path: Path, parsed: Parsed) -> np.ndarray:
    """As image_client: RGB, bilinear resize to the model's size, INCEPTION scaling, CHW for FORMAT_NCHW."""
    import tritonclient.grpc.model_config_pb2 as mc
    from PIL import Image

    c, h, w = parsed.chw
    assert c == 3
    pixels = np.array(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)).astype(np.float32)
    scaled = (pixels / 127.5) - 1
    return np.transpose(scaled, (2, 0, 1)) if parsed.format == mc.ModelInput.FORMAT_NCHW else scaled


def _batches(images: list[np.ndarray], batch_size: int, batching: bool) -> list[np.ndarray]:
    """image_client's loop: batch_size images a request, starting over until every image was sent once."""
    batches, index, last = [], 0, False
    while not last:
        chosen = []
        for _ in range(batch_size):
            chosen.append(images[index])
            index = (index + 1) % len(images)
            last = last or index == 0
        batches.append(np.stack(chosen) if batching else chosen[0])
    return batches


def _send(protocol: str, mode: str, client: Any, name: str, parsed: Parsed, batches: list[np.ndarray]) -> list[Any]:
    """The requests image_client sends in each of its modes; the results in the order it prints them."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module: Any = grpcclient if protocol == "grpc" else httpclient
    done: queue.Queue[tuple[Any, Any]] = queue.Queue()
    callback = partial(lambda q, result, error: q.put((result, error)), done)
    if mode == "streaming":
        client.start_stream(callback)
    results, handles = [], []
    for number, data in enumerate(batches, 1):
        inputs = [module.InferInput(parsed.input_name, data.shape, parsed.datatype)]
        inputs[0].set_data_from_numpy(data)
        outputs = [module.InferRequestedOutput(parsed.output_name, class_count=CLASSES)]
        kwargs = {"request_id": str(number), "model_version": "", "outputs": outputs}
        if mode == "streaming":
            client.async_stream_infer(name, inputs, **kwargs)
        elif mode == "async" and protocol == "grpc":
            client.async_infer(name, inputs, callback, **kwargs)
        elif mode == "async":
            handles.append(client.async_infer(name, inputs, **kwargs))
        else:
            results.append(client.infer(name, inputs, **kwargs))
    if mode == "streaming":
        client.stop_stream()
    if protocol == "grpc" and mode != "sync":
        for _ in batches:
            result, error = done.get(timeout=120)
            assert error is None, error
            results.append(result)
    results += [handle.get_result() for handle in handles]
    return results


def _classes(result: Any, protocol: str, parsed: Parsed, batch_size: int) -> tuple[str, list[list[str]]]:
    """The request id and, per image, the "score:index:label" strings as image_client's postprocess reads them."""
    request_id = result.get_response().id if protocol == "grpc" else result.get_response()["id"]
    array = result.as_numpy(parsed.output_name)
    if parsed.max_batch_size > 0:
        assert len(array) == batch_size
        rows = list(array)
    else:
        rows = [array]
    assert array.dtype == np.object_
    return request_id, [["".join(chr(x) for x in r) for r in row] for row in rows]


def _expected(client: Any, protocol: str, name: str, parsed: Parsed, image: np.ndarray, prefix: str) -> list[str]:
    """The top classes of one image, from the plain scores (no classification), as Triton formats them."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module: Any = grpcclient if protocol == "grpc" else httpclient
    data = image[np.newaxis] if parsed.max_batch_size > 0 else image
    inputs = [module.InferInput(parsed.input_name, data.shape, parsed.datatype)]
    inputs[0].set_data_from_numpy(data)
    scores = client.infer(name, inputs).as_numpy(parsed.output_name).reshape(-1)
    top = np.argsort(-scores, kind="stable")[:CLASSES]
    return [f"{scores[i]:f}:{i}:{prefix} {i}" for i in top]


def _split(row: list[str]) -> list[tuple[str, str]]:
    """(index, label) of each "score:index:label"."""
    return [(r.split(":")[1], r.split(":", 2)[2]) for r in row]


_PREFIXES = {DENSENET: "dense", INCEPTION: "incep"}

CASES = [
    (DENSENET, "dense", "http", "sync", 1),
    (DENSENET, "dense", "http", "async", 1),
    (DENSENET, "dense", "grpc", "sync", 1),
    (DENSENET, "dense", "grpc", "streaming", 1),
    (INCEPTION, "incep", "http", "sync", 1),
    (INCEPTION, "incep", "http", "async", 2),
    (INCEPTION, "incep", "grpc", "async", 2),
    (INCEPTION, "incep", "grpc", "streaming", 2),
]


@pytest.mark.parametrize(("name", "prefix", "protocol", "mode", "batch_size"), CASES)
def test_image_client_flow_classifies_every_image(
    server: tuple[str, str], images: list[Path], name: str, prefix: str, protocol: str, mode: str, batch_size: int
) -> None:
    import tritonclient.grpc.model_config_pb2 as mc

    client, parsed = _model(protocol, server[1] if protocol == "grpc" else server[0], name)
    layout = mc.ModelInput.FORMAT_NCHW if name == DENSENET else mc.ModelInput.FORMAT_NHWC
    assert (parsed.format, parsed.chw, parsed.output_name) == (
        layout,
        (3, 224, 224) if name == DENSENET else (3, 299, 299),
        OUTPUTS[name],
    )
    assert parsed.max_batch_size == (0 if name == DENSENET else 128)
    data = [_preprocess(p, parsed) for p in images]
    batches = _batches(data, batch_size, parsed.max_batch_size > 0)
    results = _send(protocol, mode, client, name, parsed, batches)
    expected = [_expected(client, protocol, name, parsed, image, prefix) for image in data]
    seen: dict[str, list[list[str]]] = {}
    for result in results:
        request_id, rows = _classes(result, protocol, parsed, batch_size)
        seen[request_id] = rows
    assert sorted(seen) == [str(n) for n in range(1, len(batches) + 1)]
    order = [i % len(data) for i in range(len(batches) * batch_size)]
    got = [row for n in range(1, len(batches) + 1) for row in seen[str(n)]]
    assert [_split(row) for row in got] == [_split(expected[i]) for i in order]
    for row, i in zip(got, order, strict=True):  # scores of a batch and of one image may differ in the last bits
        assert [float(r.split(":")[0]) for r in row] == pytest.approx(
            [float(e.split(":")[0]) for e in expected[i]], abs=1e-5
        )
    client.close()


def test_a_model_exported_without_layout_says_format_none_as_triton_does(server: tuple[str, str]) -> None:
    """Triton writes every input's format; without --layout it is FORMAT_NONE, which image_client refuses."""
    import requests
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.model_config_pb2 as mc

    config = requests.get(f"http://{server[0]}/v2/models/{UNLAID}/config", timeout=60).json()
    assert config["input"][0]["format"] == "FORMAT_NONE"
    assert "format" not in config["output"][0] and "label_filename" not in config["output"][0]  # none beside it
    client = grpcclient.InferenceServerClient(url=server[1])
    assert client.get_model_config(UNLAID).config.input[0].format == mc.ModelInput.FORMAT_NONE
    with pytest.raises(ValueError, match="unexpected input format FORMAT_NONE"):
        _parse(client.get_model_metadata(UNLAID), client.get_model_config(UNLAID).config)
    client.close()


@pytest.mark.parametrize(
    ("name", "mode", "batch_size"), [(DENSENET, "sync", 1), (INCEPTION, "async", 2), (INCEPTION, "streaming", 2)]
)
def test_grpc_image_client_flow_with_the_generated_stubs(
    server: tuple[str, str], images: list[Path], name: str, mode: str, batch_size: int
) -> None:
    """grpc_image_client.py: ModelMetadata / ModelConfig / ModelInfer (or its future, or ModelStreamInfer) on the
    raw stubs, the images as raw_input_contents, ``classification`` as an int64 output parameter, and the answer
    read from raw_output_contents with deserialize_bytes_tensor, reshaped to the output's shape."""
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import deserialize_bytes_tensor

    channel = grpc.insecure_channel(server[1])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name, version=""))
    parsed = _parse(metadata, stub.ModelConfig(service_pb2.ModelConfigRequest(name=name, version="")).config)
    batching = parsed.max_batch_size > 0
    data = [_preprocess(p, parsed) for p in images]
    batches = _batches(data, batch_size, batching)
    requests = []
    for batch in batches:
        request = service_pb2.ModelInferRequest(model_name=name, model_version="")
        output = request.outputs.add(name=parsed.output_name)
        output.parameters["classification"].int64_param = CLASSES
        request.inputs.add(name=parsed.input_name, datatype=parsed.datatype, shape=batch.shape)
        request.raw_input_contents.append(batch.tobytes())
        requests.append(request)
    if mode == "streaming":
        streamed = list(stub.ModelStreamInfer(iter(requests), timeout=120))
        assert [r.error_message for r in streamed] == [""] * len(requests)
        responses = [r.infer_response for r in streamed]
    elif mode == "async":
        responses = [f.result(timeout=120) for f in [stub.ModelInfer.future(r, timeout=120) for r in requests]]
    else:
        responses = [stub.ModelInfer(r, timeout=120) for r in requests]
    client = grpcclient.InferenceServerClient(url=server[1])
    expected = [_expected(client, "grpc", name, parsed, image, _PREFIXES[name]) for image in data]
    client.close()
    got = []
    for response in responses:
        assert len(response.outputs) == 1 and len(response.raw_output_contents) == 1
        contents = np.reshape(deserialize_bytes_tensor(response.raw_output_contents[0]), response.outputs[0].shape)
        assert len(contents) == (batch_size if batching else CLASSES)
        got += [["".join(chr(x) for x in r) for r in row] for row in (contents if batching else [contents])]
    order = [i % len(data) for i in range(len(batches) * batch_size)]
    assert [_split(row) for row in got] == [_split(expected[i]) for i in order]
    channel.close()


@pytest.mark.parametrize("name", [DENSENET, INCEPTION])
def test_the_configuration_names_the_labels_file_beside_the_model(server: tuple[str, str], name: str) -> None:
    """Triton's ``label_filename``: the labels.txt the classification extension reads."""
    import requests
    import tritonclient.grpc as grpcclient

    config = requests.get(f"http://{server[0]}/v2/models/{name}/config", timeout=60).json()
    assert [o.get("label_filename") for o in config["output"]] == ["labels.txt"]
    assert "label_filename" not in config["input"][0]
    client = grpcclient.InferenceServerClient(url=server[1])
    assert [o.label_filename for o in client.get_model_config(name).config.output] == ["labels.txt"]
    client.close()
