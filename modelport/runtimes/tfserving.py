"""``runtime: tfserving``: forward predictions to a running TF Serving over its gRPC API.

The whole batch goes in one ``PredictionService.Predict`` (TF Serving takes batches), tensors
converted with ``tf.make_tensor_proto`` / ``tf.make_ndarray``; health is
``ModelService.GetModelStatus``: some version of the model must be AVAILABLE. The message
classes come from ``tensorflow-serving-api`` (extra ``tfserving``), which imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidArgumentError,
    ModelportError,
    SourceError,
    UnavailableError,
)
from modelport.runtimes.base import Arrays, import_framework
from modelport.runtimes.remote import RemoteRuntime

__all__ = ["TFServingRuntime"]

_AVAILABLE = 30  # tensorflow.serving.ModelVersionStatus.State.AVAILABLE


class TFServingRuntime(RemoteRuntime):
    """A model served by TF Serving (or anything speaking its gRPC API), reached over gRPC."""

    kind = "tfserving"
    _channel: Any = None

    def _connect(self) -> None:
        if self.target.version is not None and not self.target.version.isdigit():
            raise SourceError(f"remote version {self.target.version!r}: TF Serving versions are integers")
        grpc = import_framework("grpc", "tfserving")
        self._tf = import_framework("tensorflow", "tfserving")
        services = import_framework("tensorflow_serving.apis.prediction_service_pb2_grpc", "tfserving")
        models = import_framework("tensorflow_serving.apis.model_service_pb2_grpc", "tfserving")
        self._apis = import_framework("tensorflow_serving.apis.predict_pb2", "tfserving")
        self._status = import_framework("tensorflow_serving.apis.get_model_status_pb2", "tfserving")
        self._grpc = grpc
        limit = 64 * 1024 * 1024
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        self._channel = grpc.insecure_channel(self.target.address, options=options)
        self._predict = services.PredictionServiceStub(self._channel)
        self._models = models.ModelServiceStub(self._channel)

    def _disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def _spec(self, message: Any) -> None:
        message.model_spec.name = self.target.model
        if self.target.version:
            message.model_spec.version.value = int(self.target.version)

    def _probe(self) -> tuple[bool, str]:
        request = self._status.GetModelStatusRequest()
        self._spec(request)
        reply = self._rpc(self._models.GetModelStatus, request, timeout=min(self.target.timeout_s, 5.0))
        if any(s.state == _AVAILABLE for s in reply.model_version_status):
            return True, ""
        return False, f"TF Serving at {self.target.address} has no AVAILABLE version of {self.target.model!r}"

    def _call(self, inputs: Arrays) -> Arrays:
        request = self._apis.PredictRequest()
        self._spec(request)
        request.model_spec.signature_name = self.target.signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(self._tf.make_tensor_proto(value))
        request.output_filter.extend(s.name for s in self.manifest.outputs)
        reply = self._rpc(self._predict.Predict, request, timeout=self.target.timeout_s)
        missing = [s.name for s in self.manifest.outputs if s.name not in reply.outputs]
        if missing:
            raise InferenceError(f"TF Serving's answer lacks the outputs {missing}")
        return {s.name: self._tf.make_ndarray(reply.outputs[s.name]) for s in self.manifest.outputs}

    def _rpc(self, method: Any, request: Any, timeout: float) -> Any:
        try:
            return method(request, timeout=timeout)
        except self._grpc.RpcError as exc:
            raise _remote_error(exc, self._grpc.StatusCode, self.target.address) from None


def _remote_error(exc: Any, codes: Any, address: str) -> ModelportError:
    code, details = exc.code(), exc.details()
    where = f"TF Serving at {address}"
    if code in (codes.UNAVAILABLE, codes.NOT_FOUND, codes.RESOURCE_EXHAUSTED):
        return UnavailableError(f"{where} cannot serve the model now ({code.name}): {details}", 2.0)
    if code == codes.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"{where} did not answer in time")
    if code in (codes.INVALID_ARGUMENT, codes.FAILED_PRECONDITION, codes.OUT_OF_RANGE):
        return InvalidArgumentError(f"{where} rejected the request ({code.name}): {details}")
    return InferenceError(f"{where} failed ({code.name}): {details}")
