"""TF Serving gRPC: ``PredictionService`` (Predict, GetModelMetadata) and ``ModelService.GetModelStatus``.

Built on the message and servicer classes of ``tensorflow-serving-api``, with tensors converted by
``tf.make_ndarray`` / ``tf.make_tensor_proto`` (every dtype, strings included). Those classes
import TensorFlow, so this service is enabled with ``--tfserving-grpc``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, SpecError, summarize
from modelport.quiet import import_quietly
from modelport.runtimes.base import import_framework
from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_status import guard
from modelport.serving.tfserving_rest import SIGNATURE, missing_version
from modelport.serving.types import (
    InferRequest,
    ModelMetadata,
    RequestedOutput,
    TensorMetadata,
    VersionState,
    VersionStatus,
)
from modelport.tensors import TF_DTYPES

__all__ = [
    "add_tfserving_services",
    "tfserving_descriptor_files",
]

_STATES = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNLOADING": "UNLOADING", "FAILED": "END"}


def add_tfserving_services(server: Any, plane: DataPlane) -> list[str]:
    """Register both services on ``server``; returns their full names (for reflection)."""
    with contextlib.suppress(ImportError):  # import_framework below says which extra installs it
        import_quietly("tensorflow")  # at startup: its C++ lines before its log level applies stay off the log
    apis = import_framework("tensorflow_serving.apis.prediction_service_pb2_grpc", "tfserving")
    models = import_framework("tensorflow_serving.apis.model_service_pb2_grpc", "tfserving")
    prediction, model = _servicers(plane, apis, models)
    apis.add_PredictionServiceServicer_to_server(prediction, server)
    models.add_ModelServiceServicer_to_server(model, server)
    return ["tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"]


def tfserving_descriptor_files() -> list[Any]:
    """The proto files of both services (for reflection), once ``add_tfserving_services`` imported them."""
    names = ("prediction_service_pb2", "model_service_pb2")
    return [import_framework(f"tensorflow_serving.apis.{n}", "tfserving").DESCRIPTOR for n in names]


def _version(plane: DataPlane, spec: Any) -> str | None:
    """The version a ModelSpec names: ``version``, ``version_label`` (config.yaml) or neither (the default)."""
    if spec.HasField("version"):
        return str(spec.version.value)
    return plane.resolve_version(spec.name, label=spec.version_label or None)


def _to_array(tf: Any, name: str, proto: Any, limit: int) -> np.ndarray[Any, Any]:
    """``tf.make_ndarray``, after checking the claimed shape: it fills a tensor whose values are missing (or
    fewer than its shape) by repeating the last one, so a tiny message could otherwise claim terabytes."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or len(dims) > 32 or any(d < 0 for d in dims):
        raise SpecError(f"input {name!r}: tensor_shape {dims} must be a known shape of non-negative sizes")
    try:
        itemsize = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype).itemsize
    except (TypeError, ValueError, KeyError):  # KeyError: DT_VARIANT, DT_RESOURCE... have no numpy type
        raise SpecError(f"input {name!r}: unsupported dtype {proto.dtype}") from None
    count = math.prod(dims)
    if count * itemsize > limit:
        raise SpecError(f"input {name!r}: tensor_shape {dims} is larger than the server accepts ({limit} bytes)")
    if proto.tensor_content and len(proto.tensor_content) != count * itemsize:
        raise SpecError(
            f"input {name!r}: tensor_shape {dims} needs {count * itemsize} bytes of tensor_content, "
            f"got {len(proto.tensor_content)}"
        )
    try:
        return np.asarray(tf.make_ndarray(proto))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"input {name!r}: {summarize(exc)}") from None


def _by_signature_key(tensors: tuple[TensorMetadata, ...]) -> dict[str, str]:
    """Signature key -> manifest name, for the tensors whose key is another name (a SavedModel's)."""
    return {t.tfserving_key: t.name for t in tensors if t.tfserving_key != t.name}


def _check_signature(name: str) -> None:
    if name not in ("", SIGNATURE):
        raise InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')


def _servicers(plane: DataPlane, apis: Any, models: Any) -> tuple[Any, Any]:
    tf = import_framework("tensorflow", "tf")
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

    class PredictionServicer(apis.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
            async def call() -> Any:
                _check_signature(request.model_spec.signature_name)
                version = _version(plane, request.model_spec)
                limit = plane.settings.max_body_bytes
                meta = plane.serving_metadata(request.model_spec.name, version)
                names, keys = _by_signature_key(meta.inputs), {t.name: t.tfserving_key for t in meta.outputs}
                inputs = {names.get(k, k): _to_array(tf, k, v, limit) for k, v in request.inputs.items()}
                outputs = _by_signature_key(meta.outputs)
                wanted = tuple(RequestedOutput(outputs.get(n, n)) for n in request.output_filter)
                answer = await plane.infer(
                    request.model_spec.name, version, InferRequest(inputs, outputs=wanted), "tfserving-grpc"
                )
                reply = predict_pb2.PredictResponse()
                reply.model_spec.name = answer.model_name
                reply.model_spec.version.value = int(answer.model_version)
                reply.model_spec.signature_name = SIGNATURE
                for name, value in answer.outputs.items():  # keyed as the signature keys them, as TF Serving does
                    reply.outputs[keys.get(name, name)].CopyFrom(tf.make_tensor_proto(value))
                return reply

            return await guard(context, call)

        async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                if list(request.metadata_field) != ["signature_def"]:
                    raise InvalidArgumentError("Metadata field signature_def is the only one supported")
                spec = request.model_spec
                meta = plane.model_metadata(spec.name, _version(plane, spec), ready_only=True)
                reply = get_model_metadata_pb2.GetModelMetadataResponse()
                reply.model_spec.name = spec.name
                reply.model_spec.version.value = meta.status.version
                reply.metadata["signature_def"].Pack(_signature_map(meta))
                return reply

            return await guard(context, call)

    class ModelServicer(models.ModelServiceServicer):  # type: ignore[misc]
        async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                wanted = _version(plane, request.model_spec)
                versions = plane.model_versions(request.model_spec.name)
                versions = [v for v in versions if wanted in (None, str(v.version))]
                if not versions and wanted is not None:
                    raise missing_version(request.model_spec.name, wanted)
                return _status_reply(versions)

            return await guard(context, call)

    return PredictionServicer(), ModelServicer()


def _status_reply(versions: list[VersionStatus]) -> Any:
    """A GetModelStatusResponse: AVAILABLE, LOADING, UNLOADING or END, with the reason of a failed load."""
    from tensorflow_serving.apis import get_model_status_pb2

    reply = get_model_status_pb2.GetModelStatusResponse()
    for version in versions:
        status = reply.model_version_status.add(version=version.version)
        status.state = get_model_status_pb2.ModelVersionStatus.State.Value(_STATES[version.state.value])
        status.status.error_code = 0 if version.state is not VersionState.FAILED else 2  # OK, UNKNOWN
        status.status.error_message = version.reason
    return reply


def _signature_map(meta: ModelMetadata) -> Any:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor: TensorMetadata) -> Any:
        message = meta_graph_pb2.TensorInfo(
            name=f"{tensor.native_name}:0", dtype=types_pb2.DataType.Value(TF_DTYPES[tensor.dtype])
        )
        for dim in tensor.shape:
            message.tensor_shape.dim.add(size=dim)
        return message

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for tensor in meta.inputs:
        signature.inputs[tensor.tfserving_key].CopyFrom(info(tensor))
    for tensor in meta.outputs:
        signature.outputs[tensor.tfserving_key].CopyFrom(info(tensor))
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def[SIGNATURE].CopyFrom(signature)
    return signature_map
