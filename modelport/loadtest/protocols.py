"""One codec per protocol: read the served model's tensor specs, encode requests to bytes, check a reply.

Requests are encoded once, in the driver process, into the exact bytes sent on the wire; the
locust process only replays them (so TensorFlow or tritonclient never load next to gevent).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from modelport.errors import InvalidArgumentError, ModelNotReadyError, NotFoundError, UnavailableError
from modelport.loadtest.options import Protocol
from modelport.loadtest.wire import HttpReply, grpc_call, http_call, reply_json
from modelport.manifest import TensorSpec
from modelport.quiet import import_quietly
from modelport.tensors import TF_DTYPES, Arrays, lookup_dtype, raw_bytes

__all__ = ["Codec", "Endpoint", "Payload", "Target", "codec_for"]

_BY_TF = {tf: name for name, tf in TF_DTYPES.items()}


@dataclass(frozen=True)
class Target:
    """Where the model is: ``url`` (http://host:port or host:port for gRPC), name and optional version."""

    url: str
    model: str
    version: str | None = None
    timeout_s: float = 30.0
    token: str = field(default="", repr=False)

    @property
    def grpc_address(self) -> str:
        return self.url.removeprefix("grpc://")

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>`` when the server wants a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, url: str) -> HttpReply:
        return http_call(url, headers=self.auth_headers(), timeout=self.timeout_s)

    def grpc(self, method: str, request: bytes) -> bytes:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return grpc_call(self.grpc_address, method, request, self.timeout_s, metadata)


@dataclass(frozen=True)
class Payload:
    """One request's bytes and the headers that must travel with them (besides the endpoint's)."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Endpoint:
    """What the locust users replay: an HTTP path with headers, or a gRPC method, on ``host``."""

    transport: Literal["http", "grpc"]
    host: str
    path: str
    headers: dict[str, str]
    name: str


class Codec:
    """KServe v2 JSON over HTTP; the other protocols override what differs."""

    protocol: Protocol = "v2"
    transport: Literal["http", "grpc"] = "http"

    def __init__(self, target: Target) -> None:
        self.target = target

    def _version_path(self, prefix: str) -> str:
        model, version = self.target.model, self.target.version
        return f"{prefix}/{model}" + (f"/versions/{version}" if version else "")

    def endpoint(self) -> Endpoint:
        path = self._version_path("/v2/models") + "/infer"
        return Endpoint("http", self.target.url, path, {"Content-Type": "application/json"}, f"{self.protocol} {path}")

    def specs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs from its v2 metadata, after checking it is ready."""
        base = self.target.url + self._version_path("/v2/models")
        meta = _get_json(base, self.target)
        ready = self.target.get(base + "/ready")
        if ready.status != 200:
            reason = (reply_json(ready) or {}).get("reason", ready.text())
            raise ModelNotReadyError(f"model {self._who()} is not ready: {reason}")
        return tuple(
            TensorSpec(name=t["name"], dtype=lookup_dtype(t["datatype"]).name, shape=tuple(int(d) for d in t["shape"]))
            for t in meta["inputs"]
        )

    def encode(self, arrays: Arrays) -> Payload:
        tensors = [
            {"name": n, "shape": list(a.shape), "datatype": _v2(a), "data": _json_list(a.ravel())}
            for n, a in arrays.items()
        ]
        return Payload(orjson.dumps({"inputs": tensors}), {})

    def check(self, payload: Payload) -> str:
        """Send ``payload`` once; returns '' when the reply is a success, else why not."""
        endpoint = self.endpoint()
        headers = {**endpoint.headers, **payload.headers, **self.target.auth_headers()}
        reply = http_call(endpoint.host + endpoint.path, payload.body, headers, self.target.timeout_s)
        return "" if reply.status == 200 else f"HTTP {reply.status}: {reply.text()}"

    def _who(self) -> str:
        version = f" version {self.target.version}" if self.target.version else ""
        return f"{self.target.model!r}{version} at {self.target.url}"


class BinaryCodec(Codec):
    """KServe v2 with the binary tensor extension (inputs and outputs as raw bytes)."""

    protocol: Protocol = "v2-binary"

    def endpoint(self) -> Endpoint:
        base = super().endpoint()
        return Endpoint("http", base.host, base.path, {"Content-Type": "application/octet-stream"}, base.name)

    def encode(self, arrays: Arrays) -> Payload:
        raws = {n: raw_bytes(a) for n, a in arrays.items()}
        tensors = [
            {"name": n, "shape": list(a.shape), "datatype": _v2(a), "parameters": {"binary_data_size": len(raws[n])}}
            for n, a in arrays.items()
        ]
        header = orjson.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}})
        return Payload(header + b"".join(raws.values()), {"Inference-Header-Content-Length": str(len(header))})


class GrpcCodec(Codec):
    """KServe v2 gRPC ``ModelInfer`` (raw input contents, as Triton's clients send)."""

    protocol: Protocol = "v2-grpc"
    transport: Literal["http", "grpc"] = "grpc"
    method = "/inference.GRPCInferenceService/ModelInfer"

    def endpoint(self) -> Endpoint:
        return Endpoint("grpc", self.target.grpc_address, self.method, {}, f"{self.protocol} {self.target.model}")

    def specs(self) -> tuple[TensorSpec, ...]:
        import grpc
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelMetadataRequest(name=self.target.model, version=self.target.version or "")
        try:
            raw = self.target.grpc("/inference.GRPCInferenceService/ModelMetadata", request.SerializeToString())
            ready = service_pb2.ModelReadyRequest(name=self.target.model, version=self.target.version or "")
            answer = service_pb2.ModelReadyResponse.FromString(
                self.target.grpc("/inference.GRPCInferenceService/ModelReady", ready.SerializeToString())
            )
        except grpc.RpcError as exc:
            raise _grpc_error(exc, self._who()) from None
        if not answer.ready:
            raise ModelNotReadyError(f"model {self._who()} is not ready")
        meta = service_pb2.ModelMetadataResponse.FromString(raw)
        return tuple(
            TensorSpec(name=t.name, dtype=lookup_dtype(t.datatype).name, shape=tuple(int(d) for d in t.shape))
            for t in meta.inputs
        )

    def encode(self, arrays: Arrays) -> Payload:
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name=self.target.model, model_version=self.target.version or "")
        for name, array in arrays.items():
            request.inputs.add(name=name, datatype=_v2(array), shape=list(array.shape))
            request.raw_input_contents.append(raw_bytes(array))
        return Payload(bytes(request.SerializeToString()), {})

    def check(self, payload: Payload) -> str:
        import grpc

        try:
            self.target.grpc(self.method, payload.body)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code().name}: {exc.details()}"
        return ""


class TfServingCodec(Codec):
    """TF Serving REST ``:predict`` with columnar ``inputs``; a ``--version`` that is no number is a label."""

    protocol: Protocol = "tfserving"

    def _version_path(self, prefix: str) -> str:
        version = self.target.version
        if version and not version.isdigit():
            return f"{prefix}/{self.target.model}/labels/{version}"
        return super()._version_path(prefix)

    def endpoint(self) -> Endpoint:
        path = self._version_path("/v1/models") + ":predict"
        return Endpoint("http", self.target.url, path, {"Content-Type": "application/json"}, f"{self.protocol} {path}")

    def specs(self) -> tuple[TensorSpec, ...]:
        meta = _get_json(self.target.url + self._version_path("/v1/models") + "/metadata", self.target)
        try:
            signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
            return tuple(
                TensorSpec(
                    name=name,
                    dtype=_BY_TF[info["dtype"]],
                    shape=tuple(int(d["size"]) for d in info["tensor_shape"]["dim"]),
                )
                for name, info in signature.items()
            )
        except (KeyError, TypeError) as exc:
            raise InvalidArgumentError(f"model {self._who()}: unexpected TF Serving metadata ({exc})") from None

    def encode(self, arrays: Arrays) -> Payload:
        return Payload(orjson.dumps({"inputs": {n: _json_list(a) for n, a in arrays.items()}}), {})


class TfServingGrpcCodec(GrpcCodec):
    """TF Serving gRPC ``PredictionService/Predict`` (its classes import TensorFlow, in this process only)."""

    protocol: Protocol = "tfserving-grpc"
    method = "/tensorflow.serving.PredictionService/Predict"

    def specs(self) -> tuple[TensorSpec, ...]:
        import grpc

        tf = import_quietly("tensorflow")
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.target.model
        _tf_version(request.model_spec, self.target.version)
        try:
            method = "/tensorflow.serving.PredictionService/GetModelMetadata"
            raw = self.target.grpc(method, request.SerializeToString())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a modelport server without TF Serving's gRPC API
                raise InvalidArgumentError(
                    f"{self.target.grpc_address} does not serve TF Serving's gRPC API ({exc.details()}): "
                    "start the server with --tfserving-grpc"
                ) from None
            raise _grpc_error(exc, self._who()) from None
        signatures = get_model_metadata_pb2.SignatureDefMap()
        get_model_metadata_pb2.GetModelMetadataResponse.FromString(raw).metadata["signature_def"].Unpack(signatures)
        inputs = signatures.signature_def["serving_default"].inputs
        return tuple(
            TensorSpec(
                name=name,
                dtype=lookup_dtype(tf.dtypes.as_dtype(info.dtype).name).name,
                shape=tuple(int(d.size) for d in info.tensor_shape.dim),
            )
            for name, info in inputs.items()
        )

    def encode(self, arrays: Arrays) -> Payload:
        tf = import_quietly("tensorflow")
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.target.model
        request.model_spec.signature_name = "serving_default"
        _tf_version(request.model_spec, self.target.version)
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        return Payload(bytes(request.SerializeToString()), {})


class TorchServeCodec(Codec):
    """TorchServe ``/predictions/{m}[/{v}]``: one instance (no batch dim) or a batch as a JSON tensor.

    TorchServe's API has no tensor metadata: the specs come from ``--input``, or from the v2
    metadata when the server also speaks it (modelport does).
    """

    protocol: Protocol = "torchserve"

    def endpoint(self) -> Endpoint:
        model, version = self.target.model, self.target.version
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        return Endpoint("http", self.target.url, path, {"Content-Type": "application/json"}, f"{self.protocol} {path}")

    def specs(self) -> tuple[TensorSpec, ...]:
        try:
            return super().specs()
        except NotFoundError as exc:
            if self._speaks_v2():  # the server has v2 metadata: the model is not there, --input would not help
                raise
            raise NotFoundError(  # a real TorchServe: "not found" would read as if the model were missing
                f"no tensor metadata for {self._who()}: the server does not speak KServe v2 and TorchServe's API has "
                "none: pass --input NAME:DTYPE:SHAPE for each input"
            ) from exc

    def _version_path(self, prefix: str) -> str:
        """The v2 metadata of a TorchServe version string (``1.0``) is its version number's, which the
        management API's ``GET /models/{m}/{version}`` says (modelport serves it on the same port)."""
        version = self.target.version
        if not version or version.isdigit():
            return super()._version_path(prefix)
        reply = self.target.get(f"{self.target.url}/models/{self.target.model}/{version}")
        described = reply_json(reply) if reply.status == 200 else None
        number = described[0].get("modelVersion") if isinstance(described, list) and described else None
        return f"{prefix}/{self.target.model}/versions/{number or version}"

    def _speaks_v2(self) -> bool:
        return self.target.get(self.target.url + "/v2/health/live").status == 200

    def encode(self, arrays: Arrays) -> Payload:
        if len(arrays) == 1 and next(iter(arrays.values())).dtype.kind in ("O", "S", "U"):
            return _torchserve_files(next(iter(arrays.values())))
        single = all(a.shape[:1] == (1,) for a in arrays.values())
        rows = {n: (a[0] if single else a) for n, a in arrays.items()}
        if len(rows) == 1:
            return Payload(orjson.dumps(_json_list(next(iter(rows.values())))), {})
        return Payload(orjson.dumps({n: _json_list(a) for n, a in rows.items()}), {})


_CODECS: dict[str, type[Codec]] = {
    "v2": Codec,
    "v2-binary": BinaryCodec,
    "v2-grpc": GrpcCodec,
    "tfserving": TfServingCodec,
    "tfserving-grpc": TfServingGrpcCodec,
    "torchserve": TorchServeCodec,
}


def codec_for(protocol: Protocol, target: Target) -> Codec:
    """The codec of ``protocol`` for ``target``; checks the URL fits the protocol's transport."""
    codec = _CODECS[protocol](target)
    if codec.transport == "grpc" and target.url.startswith(("http://", "https://")):
        raise InvalidArgumentError(
            f"--protocol {protocol} talks gRPC: give the gRPC address as host:port, not {target.url}"
        )
    if codec.transport == "http" and not target.url.startswith(("http://", "https://")):
        raise InvalidArgumentError(
            f"--protocol {protocol} talks HTTP: the URL must start with http://, got {target.url}"
        )
    return codec


def _get_json(url: str, target: Target) -> Any:
    reply = target.get(url)
    body = reply_json(reply)
    version = f" version {target.version}" if target.version else ""
    if reply.status == 404:
        why = body.get("error", "") if isinstance(body, dict) else reply.text()
        raise NotFoundError(f"model {target.model!r}{version} not found at {target.url} ({why or 'HTTP 404'})")
    if reply.status != 200 or not isinstance(body, dict):
        raise InvalidArgumentError(f"GET {url}: HTTP {reply.status}: {reply.text()}")
    return body


def _tf_version(spec: Any, version: str | None) -> None:
    """TF Serving's ``ModelSpec``: a number is its ``version``, anything else its ``version_label``."""
    if version and version.isdigit():
        spec.version.value = int(version)
    elif version:
        spec.version_label = version


def _grpc_error(exc: Any, who: str) -> Exception:
    code = exc.code().name
    if code == "NOT_FOUND":
        return NotFoundError(f"model {who} not found ({exc.details()})")
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return UnavailableError(f"cannot reach {who}: gRPC {code}: {exc.details()}")
    return InvalidArgumentError(f"model {who}: gRPC {code}: {exc.details()}")


def _v2(array: np.ndarray[Any, Any]) -> str:
    if array.dtype.kind in ("O", "S", "U"):
        return "BYTES"
    return lookup_dtype(array.dtype.name).v2


def _torchserve_files(array: np.ndarray[Any, Any]) -> Payload:
    """Payloads as TorchServe clients send them: one as the raw body (``curl -T``), several as multipart files."""
    items = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
    if len(items) == 1:
        return Payload(items[0], {"Content-Type": "application/octet-stream"})
    import httpx

    files = [("data", (f"payload{i}", item, "application/octet-stream")) for i, item in enumerate(items)]
    request = httpx.Request("POST", "http://localhost/", files=files)
    return Payload(request.read(), {"Content-Type": request.headers["content-type"]})


def _string(value: Any) -> Any:
    """A BYTES element in JSON: text as a string, other bytes (an image) as ``{"b64": ...}``."""
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def _json_list(array: np.ndarray[Any, Any]) -> Any:
    if array.dtype.kind in ("O", "S", "U"):
        return np.vectorize(_string, otypes=[object])(array).tolist()
    if array.dtype.name in ("float16", "bfloat16"):
        return array.astype(np.float32).tolist()
    return array.tolist()
