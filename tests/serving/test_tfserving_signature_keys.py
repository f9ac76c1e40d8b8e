"""Keras models exported to SavedModel answer TF Serving's APIs under the keys real TF Serving uses.

TF Serving names a SavedModel's tensors by its ``serving_default`` signature's keys: ``output_0``,
``output_1`` for the outputs of a Keras model (whatever its layers are named), ``dense_input_1`` for an input
named ``dense.input-1``. The manifest (and so v2) keeps the source's names; TF Serving REST and gRPC
(metadata, predict in rows and columns, PredictResponse) answer by the signature's keys, read here from the
SavedModel with TensorFlow itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelport
from modelport.manifest import ModelManifest, read_manifest
from tests.export import keras_kinds
from tests.serving.processes import Served, serving

pytestmark = [pytest.mark.tf]


def _two_named_outputs() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(x, [keras.layers.Dense(3, name="logits")(h), keras.layers.Dense(2, name="aux")(h)])


KINDS = {
    "sequential": keras_kinds.sequential,  # last layer named "probs"
    "two": _two_named_outputs,  # functional, outputs "logits" and "aux"
    "dicts": keras_kinds.dict_outputs,  # inputs "dense.input-1", "ids_in"; outputs keyed by a dict
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("signature-keys") / "repo"
    for name, build in KINDS.items():
        report = modelport.export(source=build(), repository=repo, name=name, formats=("savedmodel",), quiet=True)
        assert [row.status for row in report.rows] == ["pass"], [row.message for row in report.rows]
    return repo


@pytest.fixture(scope="module")
def served(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(repo, "--tfserving-grpc", log=tmp_path_factory.mktemp("server") / "server.log") as server:
        yield server


def _signature(repo: Path, name: str) -> tuple[list[str], list[str]]:
    """The input and output keys of the SavedModel's serving_default signature, as TF Serving reads them."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(repo / f"{name}-savedmodel" / "1")).signatures["serving_default"]
    return sorted(signature.structured_input_signature[1]), sorted(signature.structured_outputs)


def _inputs(manifest: ModelManifest, rows: int = 2) -> dict[str, np.ndarray]:
    """Zeros for every input, keyed by the signature's keys (the artifact's native names)."""
    return {
        manifest.native(s.name): np.zeros([rows, *(d if d > 0 else 2 for d in s.shape[1:])], dtype=s.dtype)
        for s in manifest.inputs
    }


@pytest.mark.parametrize("name", KINDS)
def test_tfserving_rest_answers_by_the_signatures_keys(repo: Path, served: Served, name: str) -> None:
    inputs, outputs = _signature(repo, name)
    manifest = read_manifest(repo / f"{name}-savedmodel" / "1")
    model = f"{served.url}/v1/models/{name}-savedmodel"
    signature = httpx.get(f"{model}/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert sorted(signature["serving_default"]["inputs"]) == inputs
    assert sorted(signature["serving_default"]["outputs"]) == outputs
    feed = {k: v.tolist() for k, v in _inputs(manifest).items()}
    columns = httpx.post(f"{model}:predict", json={"inputs": feed}).json()
    rows = httpx.post(f"{model}:predict", json={"instances": [{k: v[i] for k, v in feed.items()} for i in (0, 1)]})
    if len(outputs) == 1:  # one output: unnamed, as TF Serving answers it
        assert np.shape(columns["outputs"])[0] == 2 and np.shape(rows.json()["predictions"])[0] == 2, columns
    else:
        assert sorted(columns["outputs"]) == outputs, columns
        assert [sorted(row) for row in rows.json()["predictions"]] == [outputs, outputs], rows.text
    by_name = {s.name: feed[manifest.native(s.name)] for s in manifest.inputs}  # the manifest's names still work
    assert httpx.post(f"{model}:predict", json={"inputs": by_name}).json() == columns
    v2 = httpx.get(f"{served.url}/v2/models/{name}-savedmodel").json()
    assert [o["name"] for o in v2["outputs"]] == [s.name for s in manifest.outputs], "v2 keeps the manifest's"


@pytest.mark.parametrize("name", KINDS)
def test_tfserving_grpc_answers_by_the_signatures_keys(repo: Path, served: Served, name: str) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    inputs, outputs = _signature(repo, name)
    manifest = read_manifest(repo / f"{name}-savedmodel" / "1")
    with grpc.insecure_channel(served.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = f"{name}-savedmodel"
        for key, value in _inputs(manifest).items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        reply = stub.Predict(request, timeout=60)
        assert sorted(reply.outputs) == outputs
        request.output_filter.append(outputs[-1])
        assert list(stub.Predict(request, timeout=60).outputs) == [outputs[-1]]
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta_request.model_spec.name = f"{name}-savedmodel"
        signatures = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(meta_request, timeout=60).metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        assert (sorted(signature.inputs), sorted(signature.outputs)) == (inputs, outputs)
