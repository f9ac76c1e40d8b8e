"""TF Serving gRPC: ``PredictionService`` (Predict, Classify, Regress, MultiInference, GetModelMetadata) and
``ModelService.GetModelStatus`` (its HandleReloadConfigRequest refused, saying why: the repository is the config).

Built on the message and servicer classes of ``tensorflow-serving-api``, with tensors converted by
``tf.make_ndarray`` / ``tf.make_tensor_proto`` (every dtype, strings included); outputs carry their values in the
typed fields (``float_val``, ``int64_val``...), as TF Serving answers (``AsProtoField``), which its example clients
read (``result.outputs['scores'].float_val``). Those classes
import TensorFlow, so this service is enabled with ``--tfserving-grpc``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, SpecError, UnimplementedError, summarize
from modelport.quiet import import_quietly
from modelport.runtimes.base import import_framework
from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_status import guard
from modelport.serving.tfserving_examples import (
    CLASSIFY,
    PREDICT,
    REGRESS,
    Answer,
    classification_signature,
    classify,
    merged_examples,
    regress,
    regression_signature,
    servable_metadata,
    served_versions,
)
from modelport.serving.tfserving_rest import SIGNATURE, graph_name, missing_version, squeezed, unsqueezed
from modelport.serving.types import (
    InferRequest,
    RequestedOutput,
    Signature,
    TensorMetadata,
    VersionState,
    VersionStatus,
)
from modelport.tensors import TF_DTYPES

__all__ = [
    "add_tfserving_services",
    "tensor_proto",
    "tfserving_descriptor_files",
]

# the TensorProto field TF Serving writes each dtype's values into (tensorflow::Tensor::AsProtoField)
_FIELDS = {
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    "float16": "half_val",
    "bfloat16": "half_val",
}

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


def tensor_proto(tf: Any, value: np.ndarray[Any, Any]) -> Any:
    """A TensorProto with the values in its typed field, not ``tensor_content`` (as TF Serving answers)."""
    proto = tf.make_tensor_proto(value)
    field = _FIELDS.get(value.dtype.name)
    if field is None or not proto.tensor_content:
        return proto
    proto.ClearField("tensor_content")
    flat = value.ravel()
    values = flat.view(np.uint16) if field == "half_val" else flat  # half_val holds the 16-bit patterns
    getattr(proto, field).extend(values.tolist())
    return proto


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


def _other_signature(plane: DataPlane, spec: Any, version: str | None) -> Signature | None:
    """The SavedModel signature a PredictRequest names when it is not ``serving_default`` (None: the manifest's)."""
    name = spec.signature_name
    if name in ("", SIGNATURE):
        return None
    found = {s.name: s for s in plane.signatures(spec.name, version)}
    if name not in found:
        raise InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')
    return found[name]


def _examples(message: Any) -> list[bytes]:
    """The serialized examples of a tensorflow.serving.Input, the context merged into each."""
    kind = message.WhichOneof("kind")
    if kind is None:
        raise InvalidArgumentError("Input is empty.")
    if kind == "example_list":
        return [e.SerializeToString() for e in message.example_list.examples]
    listed = message.example_list_with_context
    return merged_examples(listed.context.SerializeToString(), [e.SerializeToString() for e in listed.examples])


async def _infer_examples(plane: DataPlane, spec: Any, method: str, examples: list[bytes]) -> Answer:
    """Classify (``method`` CLASSIFY) or Regress ``examples`` with the signature a ModelSpec names."""
    version = _version(plane, spec)
    if method == CLASSIFY:
        found = classification_signature(plane, spec.name, version, spec.signature_name)
        return await classify(plane, spec.name, version, found, examples, "tfserving-grpc")
    found = regression_signature(plane, spec.name, version, spec.signature_name)
    return await regress(plane, spec.name, version, found, examples, "tfserving-grpc")


def _classification_result(answer: Answer, result: Any) -> None:
    for row in answer.results:
        classes = result.classifications.add()
        for label, score in row:
            entry = classes.classes.add()
            if label is not None:
                entry.label = label.decode(errors="replace")
            if score is not None:
                entry.score = score


def _regression_result(answer: Answer, result: Any) -> None:
    for value in answer.results:
        result.regressions.add(value=value)


def _spec(target: Any, name: str, answer: Answer) -> None:
    target.name = name
    target.version.value = int(answer.version)
    target.signature_name = answer.signature


def _servicers(plane: DataPlane, apis: Any, models: Any) -> tuple[Any, Any]:
    tf = import_framework("tensorflow", "tf")
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        inference_pb2,
        predict_pb2,
        regression_pb2,
    )

    async def _predict_signature(signature: Signature, request: Any, version: str | None) -> Any:
        """A Predict on another signature of a SavedModel: inputs and outputs by its keys, not batched."""
        limit = plane.settings.max_body_bytes
        inputs = {k: _to_array(tf, k, v, limit) for k, v in request.inputs.items()}
        _check_keys(signature, inputs)
        wanted = _output_filter(request.output_filter, [t.tfserving_key for t in signature.outputs])
        name = request.model_spec.name
        answer = await plane.infer(name, version, InferRequest(inputs, signature=signature.name), "tfserving-grpc")
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = name
        reply.model_spec.version.value = int(answer.model_version)
        reply.model_spec.signature_name = signature.name
        for key, value in answer.outputs.items():
            if key in (wanted or answer.outputs):
                reply.outputs[key].CopyFrom(tensor_proto(tf, value))
        return reply

    class PredictionServicer(apis.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
            async def call() -> Any:
                version = _version(plane, request.model_spec)
                meta = servable_metadata(plane, request.model_spec.name, version)
                other = _other_signature(plane, request.model_spec, version)
                if other is not None:
                    return await _predict_signature(other, request, version)
                limit = plane.settings.max_body_bytes
                names, keys = _by_signature_key(meta.inputs), {t.name: t.tfserving_key for t in meta.outputs}
                inputs = {names.get(k, k): _to_array(tf, k, v, limit) for k, v in request.inputs.items()}
                inputs, added = unsqueezed(inputs, meta)
                outputs = _by_signature_key(meta.outputs)
                aliases = _output_filter(request.output_filter, keys.values(), keys)
                wanted = tuple(RequestedOutput(outputs.get(n, n)) for n in aliases)
                answer = await plane.infer(
                    request.model_spec.name, version, InferRequest(inputs, outputs=wanted), "tfserving-grpc"
                )
                reply = predict_pb2.PredictResponse()
                reply.model_spec.name = answer.model_name
                reply.model_spec.version.value = int(answer.model_version)
                reply.model_spec.signature_name = SIGNATURE
                for name, value in squeezed(answer.outputs, added).items():  # keyed by the signature's keys
                    reply.outputs[keys.get(name, name)].CopyFrom(tensor_proto(tf, value))
                return reply

            return await guard(context, call)

        async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                reply = classification_pb2.ClassificationResponse()
                answer = await _infer_examples(plane, request.model_spec, CLASSIFY, _examples(request.input))
                _spec(reply.model_spec, request.model_spec.name, answer)
                _classification_result(answer, reply.result)
                return reply

            return await guard(context, call)

        async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                reply = regression_pb2.RegressionResponse()
                answer = await _infer_examples(plane, request.model_spec, REGRESS, _examples(request.input))
                _spec(reply.model_spec, request.model_spec.name, answer)
                _regression_result(answer, reply.result)
                return reply

            return await guard(context, call)

        async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                _check_tasks(request.tasks)
                examples = _examples(request.input)
                reply = inference_pb2.MultiInferenceResponse()
                for task in request.tasks:
                    answer = await _infer_examples(plane, task.model_spec, task.method_name, examples)
                    result = reply.results.add()
                    _spec(result.model_spec, task.model_spec.name, answer)
                    if task.method_name == CLASSIFY:
                        _classification_result(answer, result.classification_result)
                    else:
                        _regression_result(answer, result.regression_result)
                return reply

            return await guard(context, call)

        async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                if list(request.metadata_field) != ["signature_def"]:
                    raise InvalidArgumentError("Metadata field signature_def is the only one supported")
                spec = request.model_spec
                meta = servable_metadata(plane, spec.name, _version(plane, spec), serving=False)
                reply = get_model_metadata_pb2.GetModelMetadataResponse()
                reply.model_spec.name = spec.name
                reply.model_spec.version.value = meta.status.version
                found = plane.signatures(spec.name, _version(plane, spec)) if meta.format is not None else ()
                signatures = found or (Signature(SIGNATURE, PREDICT, meta.inputs, meta.outputs),)
                reply.metadata["signature_def"].Pack(_signature_map(signatures))
                return reply

            return await guard(context, call)

    class ModelServicer(models.ModelServiceServicer):  # type: ignore[misc]
        async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                wanted = _version(plane, request.model_spec)
                versions = served_versions(plane, request.model_spec.name)
                versions = [v for v in versions if wanted in (None, str(v.version))]
                if not versions and wanted is not None:
                    raise missing_version(request.model_spec.name, wanted)
                return _status_reply(versions)

            return await guard(context, call)

        async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
            """TF Serving's answer to a config that is not a model_config_list; a list is UNIMPLEMENTED, said so
            (the repository is the config: its folders and config.yaml, or v2's load/unload with model control)."""

            async def call() -> Any:
                if request.config.WhichOneof("config") != "model_config_list":
                    raise InvalidArgumentError(
                        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                        "Only ModelConfigList is currently supported"
                    )
                raise UnimplementedError(
                    "modelport does not implement HandleReloadConfigRequest: it serves the models of its repository "
                    "(their folders and config.yaml, picked up with --poll-interval-s, or loaded and unloaded through "
                    "the KServe v2 repository API with --model-control)"
                )

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


def _check_keys(signature: Signature, inputs: dict[str, Any]) -> None:
    expected = sorted(t.name for t in signature.inputs)
    if sorted(inputs) != expected:
        raise InvalidArgumentError(f"Expected inputs {expected} for signature {signature.name!r}, got {sorted(inputs)}")


def _output_filter(aliases: Any, keys: Any, names: Any = ()) -> tuple[str, ...]:
    """A PredictRequest's ``output_filter`` (signature keys; also the outputs' modelport ``names``, as the inputs
    are taken by either), checked as TF Serving checks it and in its words: an alias that is neither, or one named
    twice, is INVALID_ARGUMENT."""
    known = sorted(keys)
    accepted = {*known, *names}
    seen: list[str] = []
    for alias in aliases:
        if alias not in accepted:
            raise InvalidArgumentError(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(known)}}}."
            )
        if alias in seen:
            raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return tuple(seen)


def _check_tasks(tasks: Any) -> None:
    """MultiInference's rules, in TF Serving's words: tasks on one model, each signature once, classify or regress."""
    if not tasks:
        raise InvalidArgumentError("Found no tasks in MultiInferenceRequest.")
    seen: set[str] = set()
    for task in tasks:
        if task.model_spec.name != tasks[0].model_spec.name:
            raise InvalidArgumentError("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.model_spec.signature_name or SIGNATURE
        if name in seen:
            raise InvalidArgumentError(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        if task.method_name not in (CLASSIFY, REGRESS):
            raise InvalidArgumentError(f"Unsupported signature method_name: {task.method_name}")


def _signature_map(signatures: tuple[Signature, ...]) -> Any:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    def info(tensor: TensorMetadata, unranked: frozenset[str]) -> Any:
        message = meta_graph_pb2.TensorInfo(
            name=graph_name(tensor), dtype=types_pb2.DataType.Value(TF_DTYPES[tensor.dtype])
        )
        if tensor.signature_key in unranked:
            message.tensor_shape.unknown_rank = True
        for dim in tensor.shape:
            message.tensor_shape.dim.add(size=dim)
        return message

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for found in signatures:
        signature = signature_map.signature_def[found.name]
        signature.method_name = found.method_name
        for tensor in found.inputs:
            signature.inputs[tensor.tfserving_key].CopyFrom(info(tensor, found.unranked))
        for tensor in found.outputs:
            signature.outputs[tensor.tfserving_key].CopyFrom(info(tensor, found.unranked))
    return signature_map
