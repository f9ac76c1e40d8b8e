"""TF Serving's own example models and client calls, unchanged, against ``modelport serve``.

The SavedModels are built as TF Serving's repository builds them (``tests/serving/tfserving_models.py``) and
exported as the README tells a TF Serving user to (the SavedModel directory as the source, ``--name-template
{name}`` so the clients' model names stay). Every answer is compared with the same SavedModel run in this
process by TensorFlow.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelport
from modelport.errors import SourceError
from modelport.manifest import read_manifest
from tests.serving import tfserving_models
from tests.serving.processes import Served, serving

pytestmark = [pytest.mark.tf]

JPEGS = [tfserving_models.jpeg(i) for i in range(5)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tfserving-sources")
    return {
        "half_plus_two": tfserving_models.half_plus_two(root / "half_plus_two"),
        "mnist": tfserving_models.mnist(root / "mnist"),
        "resnet": tfserving_models.resnet(root / "resnet"),
    }


def _examples(rows: int) -> list[bytes]:
    import tensorflow as tf

    rng = np.random.default_rng(1)
    feature = lambda: tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(784, dtype=np.float32) + 0.5))  # noqa: E731
    return [
        tf.train.Example(features=tf.train.Features(feature={"x": feature()})).SerializeToString() for _ in range(rows)
    ]


@pytest.fixture(scope="module")
def repo(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tfserving-repo")
    np.savez(tmp / "jpegs.npz", image_bytes=np.array(JPEGS[:4], dtype=np.bytes_))
    # mnist's serving_default parses tf.Example protos: its golden examples are made from the features it reads
    extra: dict[str, dict[str, Any]] = {"half_plus_two": {}, "mnist": {}, "resnet": {"eval_data": tmp / "jpegs.npz"}}
    for name, source in sources.items():
        report = modelport.export(
            source=source,
            repository=tmp / "repo",
            name=name,
            formats=("savedmodel",),
            name_template="{name}",
            quiet=True,
            **extra[name],
        )
        assert [row.status for row in report.rows] == ["pass"], [row.message for row in report.rows]
    return tmp / "repo"


@pytest.fixture(scope="module")
def served(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(repo, "--tfserving-grpc", log=tmp_path_factory.mktemp("server") / "server.log") as server:
        yield server


def _reference(sources: dict[str, Path], model: str, signature: str, **feed: Any) -> dict[str, np.ndarray]:
    import tensorflow as tf

    function = tf.saved_model.load(str(sources[model])).signatures[signature]
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in feed.items()}).items()}


def _stub(served: Served) -> Any:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served.grpc))


def test_resnet_client_rest_sends_jpeg_as_b64(served: Served, sources: dict[str, Path]) -> None:
    # resnet_client.py with MODEL_ACCEPT_JPG: '{"instances" : [{"b64": "%s"}]}'
    jpeg_bytes = base64.b64encode(JPEGS[4]).decode("utf-8")
    predict_request = '{"instances" : [{"b64": "%s"}]}' % jpeg_bytes  # noqa: UP031 (the client's own line)
    response = httpx.post(f"{served.url}/v1/models/resnet:predict", content=predict_request, timeout=60)
    response.raise_for_status()
    prediction = response.json()["predictions"][0]
    expected = _reference(sources, "resnet", "serving_default", image_bytes=np.array([JPEGS[4]], dtype=object))
    np.testing.assert_allclose(prediction["probabilities"], expected["probabilities"][0], atol=1e-5)
    assert prediction["classes"] == int(expected["classes"][0])


def test_resnet_client_grpc_sends_jpeg_bytes(served: Served, sources: dict[str, Path]) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    data = JPEGS[3]
    request = predict_pb2.PredictRequest()  # resnet_client_grpc.py, MODEL_ACCEPT_JPG
    request.model_spec.name = "resnet"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data, shape=[1]))
    result = _stub(served).Predict(request, 60.0)
    expected = _reference(sources, "resnet", "serving_default", image_bytes=np.array([data], dtype=object))
    np.testing.assert_allclose(result.outputs["probabilities"].float_val, expected["probabilities"][0], atol=1e-5)
    assert list(result.outputs["classes"].int64_val) == [int(expected["classes"][0])]
    half = predict_pb2.PredictRequest()
    half.model_spec.name = "half_plus_two"
    half.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0]))  # the quickstart's shape [3], over gRPC
    y = _stub(served).Predict(half, 60.0).outputs["y"]
    assert ([d.size for d in y.tensor_shape.dim], list(y.float_val)) == ([3], [2.5, 3.0, 4.5])
    request.model_spec.signature_name = "predict"  # the official model's second signature
    again = _stub(served).Predict(request, 60.0)
    assert again.model_spec.signature_name == "predict"
    np.testing.assert_allclose(again.outputs["probabilities"].float_val, expected["probabilities"][0], atol=1e-5)


def test_mnist_client_predict_on_predict_images(served: Served, sources: dict[str, Path]) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    image = np.random.default_rng(2).random(784, dtype=np.float32)
    request = predict_pb2.PredictRequest()  # mnist_client.py's do_inference
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "predict_images"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
    response = np.array(_stub(served).Predict.future(request, 60.0).result().outputs["scores"].float_val)
    expected = _reference(sources, "mnist", "predict_images", images=image[None])["scores"][0]
    np.testing.assert_allclose(response, expected, atol=1e-5)
    rest = {"signature_name": "predict_images", "instances": [image.tolist()]}  # the same over REST
    answer = httpx.post(f"{served.url}/v1/models/mnist:predict", json=rest, timeout=60)
    np.testing.assert_allclose(answer.json()["predictions"][0], expected, atol=1e-5)
    missing = httpx.post(f"{served.url}/v1/models/mnist:predict", json={**rest, "signature_name": "nope"})
    assert missing.status_code == 400, missing.text
    assert missing.json()["error"] == 'Serving signature name: "nope" not found in signature def'


def test_half_plus_two_rest_predict_rows_and_columns(served: Served) -> None:
    model = f"{served.url}/v1/models/half_plus_two"
    # TF Serving's quickstart: x is [-1, 1] in the signature, TensorFlow takes [3] and answers y as [3]
    quickstart = httpx.post(f"{model}:predict", content=b'{"instances": [1.0, 2.0, 5.0]}', timeout=60)
    assert quickstart.json() == {"predictions": [2.5, 3.0, 4.5]}, quickstart.text
    assert httpx.post(f"{model}:predict", json={"inputs": [1.0, 2.0]}).json() == {"outputs": [2.5, 3.0]}
    rows = httpx.post(f"{model}:predict", json={"instances": [[1.0], [2.0], [5.0]]}, timeout=60)
    assert rows.json() == {"predictions": [[2.5], [3.0], [4.5]]}, rows.text
    columns = httpx.post(f"{model}:predict", json={"signature_name": "serving_default", "inputs": {"x": [[1.0]]}})
    assert columns.json() == {"outputs": [[2.5]]}, columns.text


def test_half_plus_two_rest_classify_and_regress(served: Served) -> None:
    model = f"{served.url}/v1/models/half_plus_two"
    classify = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]}
    assert httpx.post(f"{model}:classify", json=classify, timeout=60).json() == {"results": [[["", 2.5]], [["", 3.5]]]}
    regress = {"signature_name": "regress_x_to_y2", "context": {"x": 2.0}, "examples": [{}, {"x": 4.0}]}
    assert httpx.post(f"{model}:regress", json=regress).json() == {"results": [4.0, 5.0]}  # x from the context, then 4
    x2 = {"signature_name": "regress_x_to_y", "examples": [{"x": [6.0], "x2": 1.0}]}
    assert httpx.post(f"{model}/versions/1:regress", json=x2).json() == {"results": [5.0]}


@pytest.mark.parametrize(
    ("api", "body", "words"),
    [
        (
            "classify",
            {"examples": [{"x": 1.0}]},
            "Expected classification signature method_name to be "
            "tensorflow/serving/classify. Was: tensorflow/serving/predict",
        ),
        (
            "regress",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/classify",
        ),
        ("regress", {"signature_name": "nope", "examples": [{"x": 1.0}]}, "No signature was found with the name: nope"),
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1}]}, "Data types don't match"),
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [None]}]}, "unexpected JSON type: null"),
        ("regress", {"signature_name": "regress_x_to_y", "examples": []}, "'examples' value is an empty array"),
        ("classify", {"signature_name": "classify_x_to_y"}, "key 'examples' is expected and was not found"),
    ],
)
def test_classify_and_regress_errors_are_tf_servings_400s(served: Served, api: str, body: Any, words: str) -> None:
    response = httpx.post(f"{served.url}/v1/models/half_plus_two:{api}", json=body, timeout=60)
    assert response.status_code == 400 and words in response.json()["error"], response.text


def test_bad_json_is_a_400(served: Served) -> None:
    response = httpx.post(f"{served.url}/v1/models/half_plus_two:classify", content=b"{bad", timeout=60)
    assert response.status_code == 400 and "JSON Parse error" in response.json()["error"], response.text


def _input(examples: list[Any], context: Any = None) -> Any:
    from tensorflow_serving.apis import input_pb2

    message = input_pb2.Input()
    if context is None:
        message.example_list.examples.extend(examples)
    else:
        message.example_list_with_context.context.CopyFrom(context)
        message.example_list_with_context.examples.extend(examples)
    return message


def _x(value: float | None = None) -> Any:
    import tensorflow as tf

    features = {} if value is None else {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[value]))}
    return tf.train.Example(features=tf.train.Features(feature=features))


def test_grpc_classify_regress_and_multi_inference(served: Served, sources: dict[str, Path]) -> None:
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    stub = _stub(served)
    request = classification_pb2.ClassificationRequest(input=_input([_x(1.0), _x(3.0)]))
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
    reply = stub.Classify(request, 60.0)
    assert [[c.score for c in row.classes] for row in reply.result.classifications] == [[2.5], [3.5]]
    assert (reply.model_spec.version.value, reply.model_spec.signature_name) == (1, "classify_x_to_y")
    regression = regression_pb2.RegressionRequest(input=_input([_x(), _x(4.0)], context=_x(2.0)))
    regression.model_spec.name, regression.model_spec.signature_name = "half_plus_two", "regress_x_to_y2"
    assert [r.value for r in stub.Regress(regression, 60.0).result.regressions] == [4.0, 5.0]
    multi = inference_pb2.MultiInferenceRequest(input=_input([_x(1.0)]))
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = multi.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
    results = stub.MultiInference(multi, 60.0).results
    assert results[0].regression_result.regressions[0].value == 2.5
    assert results[1].classification_result.classifications[0].classes[0].score == 2.5
    # mnist's serving_default is its classification signature: classes and scores of the top 10
    examples = _examples(2)
    mnist = classification_pb2.ClassificationRequest()
    mnist.model_spec.name = "mnist"
    mnist.input.example_list.examples.extend(_parse(e) for e in examples)
    classes = stub.Classify(mnist, 60.0).result.classifications
    expected = _reference(sources, "mnist", "serving_default", inputs=np.array(examples, dtype=object))
    for row, labels, scores in zip(classes, expected["classes"], expected["scores"], strict=True):
        assert [c.label.encode() for c in row.classes] == list(labels)
        np.testing.assert_allclose([c.score for c in row.classes], scores, atol=1e-5)


def _parse(serialized: bytes) -> Any:
    import tensorflow as tf

    return tf.train.Example.FromString(serialized)


def test_grpc_errors_in_tf_servings_words(served: Served) -> None:
    import grpc
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest(input=_input([_x(1.0)]))
    request.model_spec.name = "half_plus_two"  # serving_default is a predict signature
    with pytest.raises(grpc.RpcError) as caught:
        _stub(served).Classify(request, 60.0)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected classification signature method_name to be tensorflow/serving/classify" in caught.value.details()


def test_grpc_metadata_lists_every_signature_and_status(served: Served, sources: dict[str, Path]) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    _stub(served).GetModelMetadata(request, 60.0).metadata["signature_def"].Unpack(signatures)
    expected = tf.saved_model.load(str(sources["half_plus_two"])).signatures
    assert sorted(signatures.signature_def) == sorted(expected)
    assert signatures.signature_def["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    assert signatures.signature_def["classify_x_to_y"].outputs["scores"].name == "y:0"
    rest = httpx.get(f"{served.url}/v1/models/mnist/metadata", timeout=60).json()["metadata"]["signature_def"]
    assert rest["signature_def"]["serving_default"]["method_name"] == "tensorflow/serving/classify"
    assert sorted(rest["signature_def"]) == ["predict_images", "serving_default"]
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "resnet"
    with grpc.insecure_channel(served.grpc) as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=60)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_exports_say_what_a_tf_serving_model_needs(sources: dict[str, Path], repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"pass --eval-data FILE\.npz with real inputs"):
        modelport.export(source=sources["resnet"], repository=tmp_path, name="r", formats=("savedmodel",), quiet=True)
    manifest = read_manifest(repo / "mnist" / "1")
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [("inputs", "string", (-1,))]
    assert manifest.parity is not None and manifest.parity.passed


def test_bytes_an_op_cannot_parse_are_the_requests_400(served: Served) -> None:
    # ParseExample quotes what it could not parse; bytes that are not UTF-8 made TensorFlow's error unreadable (500)
    model = f"{served.url}/v1/models/mnist:predict"
    for body in ({"instances": [{"b64": "z/8="}]}, {"signature_name": "serving_default", "inputs": [{"b64": "z/8="}]}):
        answer = httpx.post(model, json=body, timeout=60)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith("the model rejected the input values"), answer.text
    words = httpx.post(model, json={"instances": ["abc"]}).json()["error"]
    assert words.endswith("Could not parse example input, value: 'abc'"), words
