"""gRPC adapter: KServe v2 ``inference.GRPCInferenceService`` over the data plane.

The message and servicer classes are the ones the ``tritonclient[grpc]`` package ships (the
service Triton implements), so Triton's gRPC clients work unchanged. Outputs always travel in
``raw_output_contents``, as Triton sends them (its explicit-content examples read nothing else); a request with
typed input contents is answered in typed ``contents`` too, as KServe's own server answers it (kserve's
``InferOutput.data`` reads only those). Standard health checking (``""`` for the server, one service name per model)
and server reflection are registered on the same server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError, UnimplementedError, summarize
from modelport.serving import tracing
from modelport.serving.auth import AuthInterceptor, Tokens
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import GENERIC_MESSAGE, public_message
from modelport.serving.grpc_shm import SharedMemoryMethods, encode_shared, plain_parameters
from modelport.serving.grpc_status import DecodeGuard, Undecodable, abort, guard
from modelport.serving.shm import Locator
from modelport.serving.torchserve_grpc import add_torchserve_service
from modelport.serving.torchserve_grpc import descriptor_file as torchserve_descriptor_file
from modelport.serving.torchserve_grpc_management import add_management_service, management_descriptor_file
from modelport.serving.triton import config_json, statistics_json
from modelport.serving.types import InferRequest, InferResponse, RequestedOutput
from modelport.serving.v2 import decode_raw_tensor, decode_shared_tensor, decode_typed_tensor, encode_raw_tensor
from modelport.serving.v2_metadata import model_metadata_json, repository_index_json
from modelport.tensors import dtype_of_array

__all__ = ["KServeServicer", "build_grpc_server", "decode_grpc_request", "encode_grpc_response", "publish_health"]

log = logging.getLogger(__name__)

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
_SETTING = {bool: "bool_param", int: "uint32_param", str: "string_param"}  # LogSettings' SettingValue fields


async def _unimplemented(context: Any, what: str) -> Any:
    """A clean UNIMPLEMENTED (the generated base class raises NotImplementedError, which logs a traceback)."""
    await abort(
        context, UnimplementedError(f"modelport does not implement {what}; ServerMetadata lists its extensions")
    )


class _NotImplemented(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The GRPCInferenceService methods of extensions modelport does not implement (nor advertise)."""

    async def TraceSetting(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _unimplemented(context, "trace settings")


class KServeServicer(SharedMemoryMethods, _NotImplemented):
    """Translates KServe v2 gRPC messages to data plane calls and back."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
        return service_pb2.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            try:
                ready, _ = self.plane.model_ready(request.name, request.version or None)
            except NotFoundError:  # as Triton answers: an unknown or unloaded model or version is not ready
                ready = False
            return service_pb2.ModelReadyResponse(ready=ready)

        return await guard(context, call)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = self.plane.server_metadata()
        return service_pb2.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            meta = model_metadata_json(self.plane.model_metadata(request.name, request.version or None))
            tensor = service_pb2.ModelMetadataResponse.TensorMetadata
            return service_pb2.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta.get("platform", ""),
                inputs=[
                    tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta.get("inputs", [])
                ],
                outputs=[
                    tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta.get("outputs", [])
                ],
            )

        return await guard(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await guard(context, lambda: self._infer(request, "v2-grpc", context.peer()))

    async def _infer(self, request: Any, protocol: str, peer: str) -> Any:
        decoded = decode_grpc_request(request, self.plane.shared_memory.seen_from(peer))
        response = await self.plane.infer(request.model_name, request.model_version or None, decoded, protocol)
        # typed contents answer typed inputs; inputs all in shared memory are answered raw, as Triton does
        typed = not request.raw_input_contents and not _all_shared(request)
        return encode_grpc_response(response, request.id, typed=typed, requested=decoded.outputs)

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        """Each request of the stream answered in the order the requests came (they run, and batch, together), as
        Triton answers a model that is not decoupled (none of modelport's is): a client matches answers to requests
        by their order, which is all it has for an error (tritonclient hands it no request id). One that fails is
        answered with an ``error_message`` and the stream goes on, as Triton does."""
        answers: asyncio.Queue[asyncio.Task[Any] | None] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(self._read_stream(request_iterator, answers, context.peer()))
        try:
            while (answer := await answers.get()) is not None:
                await asyncio.wait([answer])  # (its reader cancels it when the client goes away: then stop)
                if answer.cancelled():
                    return
                yield answer.result()
        finally:
            reader.cancel()

    async def _read_stream(self, requests: Any, answers: asyncio.Queue[asyncio.Task[Any] | None], peer: str) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                async for request in requests:
                    answers.put_nowait(group.create_task(self._stream_answer(request, peer)))
        except Exception as exc:  # the client went away mid-stream: nobody is left to answer
            log.debug("inference stream ended: %s", summarize(exc))
        finally:
            answers.put_nowait(None)

    async def _stream_answer(self, request: Any, peer: str) -> Any:
        if isinstance(request, Undecodable):
            return _stream_error(None, f"ModelStreamInfer: undecodable request ({request.error})")
        try:
            reply = await self._infer(request, "v2-grpc-stream", peer)
            return service_pb2.ModelStreamInferResponse(infer_response=reply)
        except ModelportError as exc:
            return _stream_error(request, public_message(exc))
        except Exception:
            log.exception("unhandled error in a gRPC stream request")
            return _stream_error(request, GENERIC_MESSAGE)

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            config = config_json(self.plane.model_config(request.name, request.version or None))
            return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(**config))

        return await guard(context, call)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            stats = statistics_json(self.plane.model_statistics(request.name, request.version))
            return service_pb2.ModelStatisticsResponse(**stats)

        return await guard(context, call)

    async def LogSettings(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            wanted = {
                k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in request.settings.items() if v.ListFields()
            }
            value = service_pb2.LogSettingsResponse.SettingValue
            settings = self.plane.log_settings(wanted)
            return service_pb2.LogSettingsResponse(
                settings={k: value(**{_SETTING[type(v)]: v}) for k, v in settings.items()}
            )

        return await guard(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        rows = repository_index_json(self.plane.repository_index(ready_only=request.ready))
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[index(**row) for row in rows])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self.plane.require_control()
            await self.plane.load(request.model_name, _parameters(request))
            return service_pb2.RepositoryModelLoadResponse()

        return await guard(context, call)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self.plane.require_control()
            await self.plane.unload(request.model_name, _parameters(request).get("unload_dependents") is True)
            return service_pb2.RepositoryModelUnloadResponse()

        return await guard(context, call)


def encode_grpc_response(
    response: InferResponse, request_id: str, typed: bool = False, requested: tuple[RequestedOutput, ...] = ()
) -> Any:
    """InferResponse -> ModelInferResponse, every output in ``raw_output_contents`` (as Triton sends them: what
    tritonclient and Triton's explicit-content examples read). Answering typed inputs (``typed``), every output is
    also in its typed ``contents`` unless one has no such field (FP16, BF16: then raw only), which is what KServe's
    server answers and kserve's client reads. The protocol's text wants one or the other; each of the two clients
    reads only its own, and both are answered. Outputs ``requested`` in shared memory are written there (all others
    raw)."""
    reply = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=request_id
    )
    shared = {o.name: o.shared_memory for o in requested if o.shared_memory is not None} if requested else None
    if shared:
        return encode_shared(reply, response, shared)
    datatypes = {name: dtype_of_array(value).v2 for name, value in response.outputs.items()}
    typed = typed and all(d in _CONTENTS for d in datatypes.values())
    for name, value in response.outputs.items():
        datatype, shape, raw = encode_raw_tensor(value)
        tensor = reply.outputs.add(name=name, datatype=datatype, shape=shape)
        reply.raw_output_contents.append(raw)
        if typed:
            getattr(tensor.contents, _CONTENTS[datatypes[name]]).extend(_typed_values(value))
    return reply


def _typed_values(value: np.ndarray[Any, Any]) -> list[Any]:
    """A tensor's elements for its typed contents field, in row-major order (BYTES elements as bytes)."""
    if value.dtype.kind in ("O", "S", "U"):
        return [x if isinstance(x, bytes) else str(x).encode() for x in value.ravel()]
    values: list[Any] = value.ravel().tolist()
    return values


def _stream_error(request: Any, message: str) -> Any:
    """A stream answer carrying an error, with the request's model and id so that a client can match it."""
    reply = service_pb2.ModelInferResponse()
    if request is not None:
        reply = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        )
    return service_pb2.ModelStreamInferResponse(error_message=message, infer_response=reply)


def decode_grpc_request(request: Any, regions: Locator | None = None) -> InferRequest:
    """ModelInferRequest -> InferRequest: typed ``contents`` or ``raw_input_contents`` per input, or an input read
    from shared memory (``regions``)."""
    raw = list(request.raw_input_contents)
    if raw:
        for tensor in request.inputs:
            if tensor.HasField("contents"):  # Triton's words: the protocol allows no mix
                raise InvalidArgumentError(
                    f"contents field must not be specified when using raw_input_contents for {tensor.name!r} "
                    f"for model {request.model_name!r}"
                )
    if len(raw) != len(request.inputs) and regions is not None and _any_shared(request):
        return _decode_shared(request, raw, regions)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgumentError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidArgumentError(f"input {tensor.name!r} is given twice")
        if raw:
            inputs[tensor.name] = decode_raw_tensor(tensor.name, tensor.datatype, list(tensor.shape), raw[index])
        else:
            inputs[tensor.name] = _typed_input(tensor)
    if not inputs:
        raise InvalidArgumentError("the request has no inputs")
    outputs = tuple(_requested(o, regions) for o in request.outputs)
    return InferRequest(inputs=inputs, id=request.id or None, outputs=outputs, parameters=_parameters(request))


def _parameters(request: Any) -> dict[str, Any]:
    """A request's ``parameters`` as the JSON protocol has them: each InferParameter's (or, for a load,
    ModelRepositoryParameter's) one value."""
    if not request.parameters:
        return {}
    return {
        name: getattr(value, value.WhichOneof("parameter_choice") or "bool_param")
        for name, value in request.parameters.items()
    }


def _typed_input(tensor: Any) -> np.ndarray[Any, Any]:
    field = _CONTENTS.get(tensor.datatype)
    if field is None and tensor.datatype in ("FP16", "BF16"):
        raise InvalidArgumentError(
            f"input {tensor.name!r}: {tensor.datatype} has no typed contents field; send raw_input_contents"
        )
    values = list(getattr(tensor.contents, field)) if field else None
    return decode_typed_tensor(tensor.name, tensor.datatype, list(tensor.shape), values)


def _any_shared(request: Any) -> bool:
    return any("shared_memory_region" in t.parameters for t in request.inputs)


def _all_shared(request: Any) -> bool:
    return all("shared_memory_region" in t.parameters for t in request.inputs)


def _decode_shared(request: Any, raw: list[bytes], regions: Locator) -> InferRequest:
    """A request with inputs in shared memory: those read from their regions, the others from their typed contents
    or, in order, from ``raw_input_contents`` (which holds only the inputs not in shared memory, as Triton reads it)."""
    inputs, unread = {}, iter(raw)
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidArgumentError(f"input {tensor.name!r} is given twice")
        where = regions.locate(tensor.name, plain_parameters(tensor.parameters))
        if where is not None:
            if tensor.HasField("contents"):
                raise InvalidArgumentError(
                    f"unexpected 'content' provided when using shared memory for input tensor '{tensor.name}' "
                    f"for model '{request.model_name}'"
                )
            inputs[tensor.name] = decode_shared_tensor(tensor.name, tensor.datatype, list(tensor.shape), where.read())
        elif raw:
            data = next(unread, None)
            if data is None:
                raise InvalidArgumentError(f"{len(raw)} raw_input_contents for the inputs not in shared memory")
            inputs[tensor.name] = decode_raw_tensor(tensor.name, tensor.datatype, list(tensor.shape), data)
        else:
            inputs[tensor.name] = _typed_input(tensor)
    if next(unread, None) is not None:
        raise InvalidArgumentError(f"{len(raw)} raw_input_contents for fewer inputs not in shared memory")
    outputs = tuple(_requested(o, regions) for o in request.outputs)
    return InferRequest(inputs=inputs, id=request.id or None, outputs=outputs, parameters=_parameters(request))


def _requested(output: Any, regions: Locator | None) -> RequestedOutput:
    """A requested output, with the classification or shared memory its parameters ask for."""
    if not output.parameters:
        return RequestedOutput(output.name)
    classification = _classification(output)
    if regions is None or "shared_memory_region" not in output.parameters:
        return RequestedOutput(output.name, classification=classification)
    if classification:
        raise InvalidArgumentError("output can't set both 'shared_memory_region' and 'classification'")
    where = regions.locate(output.name, plain_parameters(output.parameters))
    return RequestedOutput(output.name, shared_memory=where)


def _classification(output: Any) -> int:
    """Triton's classification extension: the ``classification`` parameter of a requested output."""
    if "classification" not in output.parameters:
        return 0
    count = output.parameters["classification"].int64_param
    if count < 0:
        raise InvalidArgumentError(f"output {output.name!r}: classification must be non-negative, got {count}")
    return int(count)


def build_grpc_server(plane: DataPlane) -> tuple[Any, Any]:
    """The grpc.aio server with the KServe v2 and TorchServe (inference, management) services, health and
    reflection; and the health servicer."""
    limit = plane.settings.max_body_bytes
    tokens = Tokens.from_settings(plane.settings)
    traced = tracing.grpc_interceptor()  # first: refused and undecodable calls get their span too
    server = grpc.aio.server(
        interceptors=[
            *([traced] if traced is not None else []),
            *([AuthInterceptor(tokens)] if tokens.enabled else []),
            DecodeGuard(frozenset({_STREAM_INFER})),
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # a busy port must fail, not split the traffic: reuse it only beside the other --workers
            ("grpc.so_reuseport", 1 if plane.settings.reuse_port else 0),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(plane), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    names.append(add_torchserve_service(server, plane))
    names.append(add_management_service(server, plane))
    files = [service_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    if plane.settings.tfserving_grpc:
        from modelport.serving.tfserving_grpc import add_tfserving_services, tfserving_descriptor_files

        names += add_tfserving_services(server, plane)
        files += tfserving_descriptor_files()
    own = [torchserve_descriptor_file(), management_descriptor_file()]
    reflection.enable_server_reflection(names, server, pool=reflection_pool(files, own))
    return server, health_servicer


def reflection_pool(files: list[Any], own: list[Any]) -> descriptor_pool.DescriptorPool:
    """Every served service's descriptors in one pool, for reflection (grpcurl lists, describes and calls them): the
    ``files`` of generated modules, with their dependencies, and ``own`` files built by hand (TorchServe's services,
    which stay out of the default pool: a client's generated module of the same proto in the process would clash)."""
    default, pool, added = descriptor_pool.Default(), descriptor_pool.DescriptorPool(), set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb))
        added.add(file.name)

    for file in files:
        add(file)
    for proto in own:
        for dependency in proto.dependency:
            add(default.FindFileByName(dependency))
        pool.Add(proto)
    return pool


async def publish_health(plane: DataPlane, servicer: Any) -> None:
    """Server health under ``""``, each model's under its name (SERVING when its default version is ready)."""
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await servicer.set("", serving if plane.ready() else not_serving)
    for name, ready in plane.models_ready().items():
        await servicer.set(name, serving if ready else not_serving)
