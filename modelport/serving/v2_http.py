"""The KServe v2 inference route of the HTTP port (``POST /v2/models/{model}[/versions/{version}]/infer``), as a
hot route of the lean front (``serving/front.py``): JSON or the binary tensor extension in, the same out.

Apart from the FastAPI app of ``serving/rest.py`` (whose routes FastAPI introspects) so that it can be compiled
with the rest of the hot path (``serving/native.py``)."""

from __future__ import annotations

from modelport.errors import InvalidArgumentError
from modelport.serving.dataplane import DataPlane
from modelport.serving.front import BodyReader, HotRoute, RequestHead
from modelport.serving.httperrors import Reply
from modelport.serving.v2 import HEADER_LENGTH, decode_request, encode_response

__all__ = ["INFER_ROUTES", "infer"]

HEADER_LENGTH_KEY = HEADER_LENGTH.encode()


def _header_length(head: RequestHead) -> int | None:
    value = head.header(HEADER_LENGTH_KEY)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidArgumentError(f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}")
    return int(value)


async def infer(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST /v2/models/{model}[/versions/{version}]/infer``: JSON or the binary tensor extension."""
    header_length = _header_length(head)
    # no name for the body: a JSON body (several times its tensors' size) is freed once decoded, not held
    # while the request waits for its batch
    regions = plane.shared_memory.seen_from(head.client)
    decoded = decode_request(await read(plane.settings.max_body_bytes), header_length, regions)
    protocol = "v2" if header_length is None else "v2-binary"
    response = await plane.infer(head.params["model"], head.params.get("version"), decoded, protocol)
    content, binary_header = encode_response(response, decoded)
    if binary_header is None:
        return Reply(200, content)
    return Reply(200, content, b"application/octet-stream", ((HEADER_LENGTH_KEY, str(binary_header).encode()),))


INFER_ROUTES = [
    HotRoute(path, frozenset({"POST"}), infer)
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer")
]
