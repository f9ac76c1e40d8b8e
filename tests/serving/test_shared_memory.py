"""Triton's system shared memory extension through tritonclient's own shared memory utilities and clients.

The flow of tritonclient's ``simple_http_shm_client.py`` / ``simple_grpc_shm_client.py`` against a model shaped
like theirs, inline and shared tensors mixed, BYTES tensors, and every refusal in Triton's words and codes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException, serialize_byte_tensor, serialized_byte_size

import modelport
from modelport.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, UnimplementedError
from modelport.manifest import TensorSpec
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.shm import SHM_ROOT, SharedMemory, local_peer
from modelport.serving.v2 import decode_request
from tests.serving import fakes
from tests.serving.processes import Served, serving

TRANSPORTS = ["http", "grpc"]
BYTE_SIZE = 64  # 16 INT32


def _export_simple(repo: Path) -> str:
    """Triton's ``simple`` model as an ONNX graph (Add, Sub), exported by ``modelport export``; its served name."""
    from onnx import TensorProto, helper, save

    tensors = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 16]) for n in _SIMPLE]
    nodes = [helper.make_node(op, ["INPUT0", "INPUT1"], [out]) for op, out in (("Add", "OUTPUT0"), ("Sub", "OUTPUT1"))]
    source = repo.parent / "simple.onnx"
    graph = helper.make_graph(nodes, "simple", tensors[:2], tensors[2:])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    specs = tuple(TensorSpec.parse(f"{n}:int32:-1x16") for n in _SIMPLE[:2])
    report = modelport.export(
        source=str(source), formats=("onnx",), inputs=specs, repository=repo, name="simple", quiet=True
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    return "simple-onnx"


_SIMPLE = ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    repo = tmp_path_factory.mktemp("shm") / "repo"
    fakes.write_simple_model(repo)  # a fake runtime, named "simple" as in tritonclient's examples
    _export_simple(repo)  # the same model run by onnxruntime
    fakes.write_identity_model(repo, "identity", ["int32", "string"])
    log = repo.parent / "server.log"
    with serving(repo, log=log, timeout=60) as served:
        yield served, log
    assert "Traceback" not in log.read_text(), "the server logged a traceback"


@pytest.fixture
def regions() -> Iterator[Any]:
    """Creates regions with unique keys (tests run in parallel) and destroys them all afterwards."""
    made: list[Any] = []

    def create(size: int) -> tuple[Any, str]:
        key = f"/modelport_test_{uuid.uuid4().hex}"
        handle = shm.create_shared_memory_region(key[1:], key, size)
        made.append(handle)
        return handle, key

    yield create
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _module(transport: str) -> Any:
    return triton_http if transport == "http" else triton_grpc


def _client(server: tuple[Served, Path], transport: str) -> Any:
    served = server[0]
    if transport == "http":
        return triton_http.InferenceServerClient(url=served.url.removeprefix("http://"))
    return triton_grpc.InferenceServerClient(url=served.grpc)


def _status_names(client: Any, transport: str) -> set[str]:
    status = client.get_system_shared_memory_status()
    return {r["name"] for r in status} if transport == "http" else set(status.regions)


def _field(output: Any, key: str) -> Any:
    return output[key] if isinstance(output, dict) else getattr(output, key)


@pytest.mark.parametrize("model", ["simple", "simple-onnx"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tritonclients_shared_memory_example_flow(server, regions, transport, model):
    """simple_{http,grpc}_shm_client.py, step by step: both inputs and both outputs in shared memory (the keys
    are unique: other test processes create theirs beside them)."""
    module, client = _module(transport), _client(server, transport)
    name = uuid.uuid4().hex
    client.unregister_system_shared_memory()  # the examples start with both unregisters: neither may fail
    client.unregister_cuda_shared_memory()
    input0, input1 = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    out_handle, out_key = regions(BYTE_SIZE * 2)
    client.register_system_shared_memory(f"out{name}", out_key, BYTE_SIZE * 2)
    in_handle, in_key = regions(BYTE_SIZE * 2)
    shm.set_shared_memory_region(in_handle, [input0])
    shm.set_shared_memory_region(in_handle, [input1], offset=BYTE_SIZE)
    client.register_system_shared_memory(f"in{name}", in_key, BYTE_SIZE * 2)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(f"in{name}", BYTE_SIZE)
    inputs[1].set_shared_memory(f"in{name}", BYTE_SIZE, offset=BYTE_SIZE)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(f"out{name}", BYTE_SIZE)
    outputs[1].set_shared_memory(f"out{name}", BYTE_SIZE, offset=BYTE_SIZE)

    results = client.infer(model_name=model, inputs=inputs, outputs=outputs)

    got = []
    for index, output_name in enumerate(("OUTPUT0", "OUTPUT1")):
        output = results.get_output(output_name)
        dtype, shape = utils.triton_to_np_dtype(_field(output, "datatype")), list(_field(output, "shape"))
        got.append(shm.get_contents_as_numpy(out_handle, dtype, shape, offset=index * BYTE_SIZE))
        assert _no_data(results, output, index), "the output was sent in the response too"
    assert np.array_equal(got[0][0], input0 + input1) and np.array_equal(got[1][0], input0 - input1)
    assert _status_names(client, transport) == {f"in{name}", f"out{name}"}
    client.unregister_system_shared_memory()
    assert _status_names(client, transport) == set()
    client.close()


def _no_data(results: Any, output: Any, index: int) -> bool:
    if isinstance(output, dict):
        return "data" not in output and "parameters" not in output  # as Triton: name, datatype and shape only
    return results.get_response().raw_output_contents[index] == b""


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_inline_and_shared_tensors_mix(server, regions, transport):
    module = triton_grpc if transport == "grpc" else triton_http
    client = _client(server, transport.partition("-")[0])
    handle, key = regions(BYTE_SIZE)
    name = uuid.uuid4().hex
    client.register_system_shared_memory(name, key, BYTE_SIZE)
    shm.set_shared_memory_region(handle, [np.full(16, 7, dtype=np.int32)])
    shared, inline = module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")
    shared.set_shared_memory(name, BYTE_SIZE)
    sent = np.arange(16, dtype=np.int32).reshape(1, 16)
    if transport == "grpc":
        inline.set_data_from_numpy(sent)
        outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    else:
        binary = transport == "http-binary"
        inline.set_data_from_numpy(sent, binary_data=binary)
        outputs = [module.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    outputs[0].set_shared_memory(name, BYTE_SIZE)  # the input's region: it was read before the model ran

    result = client.infer("simple", [shared, inline], outputs=outputs)

    assert np.array_equal(result.as_numpy("OUTPUT1"), 7 - sent)
    assert np.array_equal(shm.get_contents_as_numpy(handle, np.int32, [1, 16]), 7 + sent)
    client.unregister_system_shared_memory(name)
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bytes_tensors_in_shared_memory(server, regions, transport):
    """BYTES in Triton's serialized form (each element a 4-byte little-endian length, then its bytes)."""
    module, client = _module(transport), _client(server, transport)
    strings = np.array([[b"ab", b"", b"\xc3\xa9t\xc3\xa9"]], dtype=object)
    serialized = serialize_byte_tensor(strings)
    size = serialized_byte_size(serialized)
    handle, key = regions(256)
    shm.set_shared_memory_region(handle, [serialized])
    name = uuid.uuid4().hex
    client.register_system_shared_memory(name, key, 256)
    text, numbers = module.InferInput("in_string", [1, 3], "BYTES"), module.InferInput("in_int32", [1, 3], "INT32")
    text.set_shared_memory(name, size)
    numbers.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int32))
    output = module.InferRequestedOutput("out_in_string")
    output.set_shared_memory(name, 256 - 128, offset=128)

    result = client.infer("identity", [text, numbers], outputs=[output, module.InferRequestedOutput("out_in_int32")])

    written = shm.get_contents_as_numpy(handle, np.object_, [1, 3], offset=128)
    assert [bytes(x) for x in written.ravel()] == list(strings.ravel())
    entry = result.get_output("out_in_string")
    if transport == "http":  # Triton's HTTP entry of an output in shared memory has no parameters
        assert "parameters" not in entry and "data" not in entry
    else:
        assert entry.parameters["shared_memory_byte_size"].int64_param == size
    client.unregister_system_shared_memory(name)
    client.close()


def _refusal(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


CODES = {  # Triton's HTTP statuses and gRPC codes for its errors
    "http": {"invalid": "400", "exists": "400", "not_found": "404"},
    "grpc": {
        "invalid": "StatusCode.INVALID_ARGUMENT",
        "exists": "StatusCode.ALREADY_EXISTS",
        "not_found": "StatusCode.NOT_FOUND",
    },
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_registration_errors_in_tritons_words(server, regions, transport):
    client, codes = _client(server, transport), CODES[transport]
    _, key = regions(BYTE_SIZE)
    name = uuid.uuid4().hex
    client.register_system_shared_memory(name, key, BYTE_SIZE)
    assert _refusal(lambda: client.register_system_shared_memory(name, key, BYTE_SIZE)) == (
        codes["exists"],
        f"shared memory region '{name}' already in manager",
    )
    missing = f"/modelport_test_missing_{uuid.uuid4().hex}"
    assert _refusal(lambda: client.register_system_shared_memory(f"x{name}", missing, 8)) == (
        codes["invalid"],
        f"Unable to open shared memory region: '{missing}'",
    )
    for offset, size in ((0, BYTE_SIZE + 1), (BYTE_SIZE, 1), (8, BYTE_SIZE - 7)):
        status, message = _refusal(lambda o=offset, s=size: client.register_system_shared_memory(f"x{name}", key, s, o))
        assert status == codes["invalid"] and f"failed to register shared memory region 'x{name}': invalid" in message
    assert _refusal(lambda: client.get_system_shared_memory_status(f"x{name}")) == (
        codes["not_found"],
        f"Unable to find system shared memory region: 'x{name}'",
    )
    assert _status_names(client, transport) >= {name}
    client.unregister_system_shared_memory(f"x{name}")  # not registered: no error, as Triton
    client.unregister_system_shared_memory(name)
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("key", ["/../etc/passwd", "/a/b", "/..", "..", "/", "", "/a\0b", "/x..y"])
def test_keys_that_are_not_one_shared_memory_name_are_refused(server, transport, key):
    client = _client(server, transport)
    status, message = _refusal(lambda: client.register_system_shared_memory(uuid.uuid4().hex, key, 8))
    assert status == CODES[transport]["invalid"] and "invalid shared memory key" in message
    client.close()


def test_a_symlink_in_dev_shm_is_not_followed(server, tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"not shared memory, but a file elsewhere")
    link = SHM_ROOT / f"modelport_test_link_{uuid.uuid4().hex}"
    link.symlink_to(target)
    try:
        client = _client(server, "http")
        status, message = _refusal(lambda: client.register_system_shared_memory("link", f"/{link.name}", 8))
        assert (status, message) == ("400", f"Unable to open shared memory region: '/{link.name}'")
        client.close()
    finally:
        link.unlink()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inference_errors_in_tritons_words(server, regions, transport):
    module, client, codes = _module(transport), _client(server, transport), CODES[transport]
    handle, key = regions(BYTE_SIZE * 2)
    shm.set_shared_memory_region(handle, [np.arange(32, dtype=np.int32)])
    name = uuid.uuid4().hex
    client.register_system_shared_memory(name, key, BYTE_SIZE * 2)

    def infer(input_size: int = BYTE_SIZE, output_size: int = BYTE_SIZE, region: str = name, offset: int = 0) -> Any:
        first, second = module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")
        first.set_shared_memory(region, input_size)
        second.set_shared_memory(name, BYTE_SIZE, offset=BYTE_SIZE)
        output = module.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory(name, output_size, offset=offset)
        return client.infer("simple", [first, second], outputs=[output])

    assert _refusal(lambda: infer(input_size=BYTE_SIZE * 2)) == (
        codes["invalid"],
        "unexpected total byte size 128 for input 'INPUT0', expecting 64",
    )
    assert _refusal(lambda: infer(output_size=32)) == (
        codes["invalid"],
        "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 bytes "
        "to hold the results",
    )
    assert _refusal(lambda: infer(region="nope")) == (codes["not_found"], "Unable to find shared memory region: 'nope'")
    assert _refusal(lambda: infer(offset=BYTE_SIZE * 2)) == (
        codes["invalid"],
        f"Invalid offset for shared memory region: '{name}'",
    )
    assert _refusal(lambda: infer(offset=BYTE_SIZE + 8)) == (
        codes["invalid"],
        f"Invalid offset + byte size for shared memory region: '{name}'",
    )
    infer()  # the region still serves after the refusals
    assert np.array_equal(shm.get_contents_as_numpy(handle, np.int32, [16]), np.arange(16) + np.arange(16, 32))
    client.unregister_system_shared_memory(name)
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cuda_shared_memory_answers_as_a_triton_without_gpus(server, transport):
    client = _client(server, transport)
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("anything")
    status = client.get_cuda_shared_memory_status()
    assert (list(status) if transport == "http" else list(status.regions)) == []
    code, message = _refusal(lambda: client.register_cuda_shared_memory("r", b"aGFuZGxl", 0, 64))
    assert code == CODES[transport]["invalid"]
    assert message.startswith("failed to register CUDA shared memory region: 'r', GPUs not supported")
    client.close()


def test_a_shrunk_object_is_refused_not_a_crash(server, regions):
    """A client that truncates its object after registering it: reading past its end would be SIGBUS."""
    client = _client(server, "http")
    _, key = regions(8192)
    name = uuid.uuid4().hex
    client.register_system_shared_memory(name, key, 8192)
    os.truncate(SHM_ROOT / key[1:], 0)
    tensor = triton_http.InferInput("INPUT0", [1, 16], "INT32")
    tensor.set_shared_memory(name, BYTE_SIZE)
    other = triton_http.InferInput("INPUT1", [1, 16], "INT32")
    other.set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
    status, message = _refusal(lambda: client.infer("simple", [tensor, other]))
    assert status == "400" and "is now smaller than" in message
    assert client.is_server_live()
    client.unregister_system_shared_memory(name)
    client.close()


# --- in process ---------------------------------------------------------------------------------------------------


def _mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.fixture
def objects() -> Iterator[Any]:
    """Creates shared memory objects without mapping them in this process (as a client in another would)."""
    made: list[Path] = []

    def create(size: int) -> str:
        path = SHM_ROOT / f"modelport_test_{uuid.uuid4().hex}"
        with path.open("xb") as file:
            file.truncate(size)
        made.append(path)
        return f"/{path.name}"

    yield create
    for path in made:
        path.unlink()


def test_regions_are_unmapped_on_unregister_and_close(objects):
    first, second = objects(4096), objects(4096)
    memory = SharedMemory()
    memory.register("first", first, 0, 4096)
    memory.register("second", second, 100, 200)  # an offset that is not page-aligned
    assert _mapped(SHM_ROOT / first[1:]) and _mapped(SHM_ROOT / second[1:])
    memory.unregister("first")
    assert not _mapped(SHM_ROOT / first[1:]) and _mapped(SHM_ROOT / second[1:])
    memory.close()
    assert not _mapped(SHM_ROOT / second[1:])
    assert memory.status() == []


def test_an_input_is_copied_out_of_its_region_when_decoded(regions):
    """The client may rewrite the region once it has its answer: the request holds its own bytes."""
    handle, key = regions(BYTE_SIZE)
    shm.set_shared_memory_region(handle, [np.arange(16, dtype=np.int32)])
    memory = SharedMemory()
    memory.register("in", key, 0, BYTE_SIZE)
    parameters = {"shared_memory_region": "in", "shared_memory_byte_size": BYTE_SIZE}
    body = f'{{"inputs": [{{"name": "x", "datatype": "INT32", "shape": [16], "parameters": {parameters}}}]}}'
    decoded = decode_request(body.replace("'", '"').encode(), None, memory)
    shm.set_shared_memory_region(handle, [np.zeros(16, dtype=np.int32)])
    memory.unregister()
    assert np.array_equal(decoded.inputs["x"], np.arange(16))


def test_an_output_region_unregistered_while_its_request_ran_is_an_error(regions):
    _, key = regions(BYTE_SIZE)
    memory = SharedMemory()
    memory.register("out", key, 0, BYTE_SIZE)
    slot = memory.slot("out", 0, BYTE_SIZE)
    memory.unregister("out")
    with pytest.raises(NotFoundError, match="Unable to find shared memory region: 'out'"):
        slot.write("y", b"\0" * BYTE_SIZE)


def test_a_worker_of_several_refuses_registration_and_does_not_advertise_it(tmp_path, regions):
    _, key = regions(BYTE_SIZE)
    alone = build(ServerSettings(repository=tmp_path))
    assert "system_shared_memory" in alone.server_metadata().extensions
    worker = build(ServerSettings(repository=tmp_path, reuse_port=True))  # what --workers N gives each worker
    assert "system_shared_memory" not in worker.server_metadata().extensions
    with pytest.raises(UnimplementedError, match="--workers"):
        worker.shared_memory.register("r", key, 0, BYTE_SIZE)
    assert worker.shared_memory.status() == []


def test_registration_validates_its_arguments(regions):
    _, key = regions(BYTE_SIZE)
    memory = SharedMemory()
    with pytest.raises(InvalidArgumentError, match="invalid args"):
        memory.register("zero", key, 0, 0)
    with pytest.raises(InvalidArgumentError, match="a name"):
        memory.register("", key, 0, 8)
    memory.close()


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        (None, True),  # an HTTP client on a Unix socket
        ("ipv4:127.0.0.1:51234", True),  # gRPC's peer strings
        ("ipv6:[::1]:51234", True),
        ("unix:/tmp/s.sock", True),
        ("10.0.0.7", False),
        ("ipv4:10.0.0.7:51234", False),
        ("ipv6:[2001:db8::1]:443", False),
        ("ipv6:[::ffff:10.0.0.7]:443", False),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack socket
        ("", False),
    ],
)
def test_only_clients_on_the_servers_host_are_local(peer, local):
    assert local_peer(peer) is local


def test_a_client_on_another_host_cannot_map_list_or_unmap_regions(tmp_path, regions):
    # a region is an object on the server's host: a client elsewhere could map any object the server may open
    import asyncio

    import httpx

    from modelport.serving.rest import create_app

    _, key = regions(BYTE_SIZE)
    plane = build(ServerSettings(repository=tmp_path))
    plane.shared_memory.register("mine", key, 0, BYTE_SIZE)  # a local client's region

    async def call(client: tuple[str, int]) -> list[int]:
        transport = httpx.ASGITransport(app=create_app(plane), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            body = {"key": key, "offset": 0, "byte_size": BYTE_SIZE}
            answers = [
                await http.post("/v2/systemsharedmemory/region/theirs/register", json=body),
                await http.get("/v2/systemsharedmemory/status"),
                await http.post("/v2/systemsharedmemory/unregister"),
            ]
        return [a.status_code for a in answers]

    assert asyncio.run(call(("10.0.0.7", 5000))) == [403, 403, 403]
    assert [s.name for s in plane.shared_memory.status()] == ["mine"], "nothing mapped or unmapped"
    assert asyncio.run(call(("127.0.0.1", 5000))) == [200, 200, 200]
    assert plane.shared_memory.status() == []
    with pytest.raises(PermissionDeniedError, match="server's host"):
        plane.shared_memory.register("theirs", key, 0, BYTE_SIZE, local=False)
    plane.shared_memory.close()


def test_a_client_on_another_host_cannot_name_a_region_in_an_inference_request(tmp_path, regions):
    # a local client's region holds its data: another host's request must neither read nor overwrite it
    import asyncio

    import httpx

    from modelport.serving.grpc_v2 import decode_grpc_request
    from modelport.serving.rest import create_app

    _, key = regions(BYTE_SIZE)
    plane = build(ServerSettings(repository=tmp_path))
    plane.shared_memory.register("mine", key, 0, BYTE_SIZE)
    inline = {"name": "x", "datatype": "INT32", "shape": [16], "data": list(range(16))}
    in_region = {"name": "x", "datatype": "INT32", "shape": [16], "parameters": {"shared_memory_region": "mine",
                 "shared_memory_byte_size": BYTE_SIZE}}  # fmt: skip
    out_region = {"name": "y", "parameters": {"shared_memory_region": "mine", "shared_memory_byte_size": BYTE_SIZE}}

    async def infer(client: tuple[str, int], body: dict[str, Any]) -> tuple[int, str]:
        transport = httpx.ASGITransport(app=create_app(plane), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            answer = await http.post("/v2/models/absent/infer", json=body)
        return answer.status_code, answer.json()["error"]

    remote, local = ("10.0.0.7", 5000), ("127.0.0.1", 5000)
    passed = (503, "the server is still loading its models")  # decoded: the (unstarted) plane answers next
    for body in ({"inputs": [in_region]}, {"inputs": [inline], "outputs": [out_region]}):
        status, error = asyncio.run(infer(remote, body))
        assert status == 403 and "server's host" in error
        assert asyncio.run(infer(local, body)) == passed, "a local client's request is decoded"
    assert asyncio.run(infer(remote, {"inputs": [inline]})) == passed, "inline tensors are anyone's"

    request = triton_grpc.service_pb2.ModelInferRequest(model_name="absent")
    tensor = request.inputs.add(name="x", datatype="INT32", shape=[16])
    tensor.parameters["shared_memory_region"].string_param = "mine"
    tensor.parameters["shared_memory_byte_size"].int64_param = BYTE_SIZE
    with pytest.raises(PermissionDeniedError, match="server's host"):
        decode_grpc_request(request, plane.shared_memory.seen_from("ipv4:10.0.0.7:5000"))
    assert decode_grpc_request(request, plane.shared_memory.seen_from("ipv4:127.0.0.1:5000")).inputs["x"].shape == (16,)
    plane.shared_memory.close()


def test_shared_memory_can_be_turned_off(tmp_path, regions):
    _, key = regions(BYTE_SIZE)
    plane = build(ServerSettings(repository=tmp_path, shared_memory=False))  # --no-shared-memory
    assert "system_shared_memory" not in plane.server_metadata().extensions
    with pytest.raises(UnimplementedError, match="--no-shared-memory"):
        plane.shared_memory.register("r", key, 0, BYTE_SIZE)
