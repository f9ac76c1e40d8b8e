"""gRPC side of Triton's system shared memory extension: the GRPCInferenceService methods that register, list and
unregister regions (CUDA shared memory answered as a Triton without GPUs), and the encoding of outputs written into
regions. The regions themselves are :mod:`modelport.serving.shm`'s."""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from modelport.serving.dataplane import DataPlane
from modelport.serving.grpc_status import guard
from modelport.serving.shm import SharedTensor, local_peer
from modelport.serving.types import InferResponse
from modelport.serving.v2 import encode_raw_tensor

__all__ = ["SharedMemoryMethods", "encode_shared", "plain_parameters", "set_parameter"]


class SharedMemoryMethods:
    """Triton's system shared memory extension; CUDA shared memory answers as a Triton without GPUs (no region,
    a registration refused, an unregister that has nothing to do)."""

    plane: DataPlane

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            found = self.plane.shared_memory.status(request.name, local_peer(context.peer()))
            status = service_pb2.SystemSharedMemoryStatusResponse.RegionStatus
            regions = {r.name: status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size) for r in found}
            return service_pb2.SystemSharedMemoryStatusResponse(regions=regions)

        return await guard(context, call)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            local = local_peer(context.peer())
            self.plane.shared_memory.register(request.name, request.key, request.offset, request.byte_size, local)
            return service_pb2.SystemSharedMemoryRegisterResponse()

        return await guard(context, call)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self.plane.shared_memory.unregister(request.name, local_peer(context.peer()))
            return service_pb2.SystemSharedMemoryUnregisterResponse()

        return await guard(context, call)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self.plane.shared_memory.cuda_status(request.name)
            return service_pb2.CudaSharedMemoryStatusResponse()

        return await guard(context, call)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self.plane.shared_memory.cuda_register(request.name)

        return await guard(context, call)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.CudaSharedMemoryUnregisterResponse()


def encode_shared(reply: Any, response: InferResponse, shared: dict[str, SharedTensor]) -> Any:
    """Outputs in shared memory written there, with the region's parameters and an empty raw entry (as Triton
    keeps one raw entry per output); the others raw."""
    for name, value in response.outputs.items():
        datatype, shape, raw = encode_raw_tensor(value)
        tensor = reply.outputs.add(name=name, datatype=datatype, shape=shape)
        where = shared.get(name)
        if where is not None:
            where.write(name, raw)
            for key, parameter in where.parameters(len(raw)).items():
                set_parameter(tensor.parameters[key], parameter)
            raw = b""
        reply.raw_output_contents.append(raw)
    return reply


def set_parameter(parameter: Any, value: Any) -> None:
    """An ``InferParameter`` set from a plain value (a string or an integer)."""
    if isinstance(value, str):
        parameter.string_param = value
    else:
        parameter.int64_param = value


def plain_parameters(parameters: Any) -> dict[str, Any]:
    """A protobuf parameters map as plain values (each parameter's set field)."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param") for key, value in parameters.items()
    }
