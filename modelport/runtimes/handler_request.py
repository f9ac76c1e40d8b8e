"""One TorchServe request as it travels through the data plane to a custom handler, and its response back.

The handler model's one BYTES input carries one request per element. Over KServe v2, TF Serving or a
golden sample that element is the payload itself. TorchServe's ``/predictions`` sends more: the request's
named inputs (``body`` for the raw or JSON body; each ``multipart/form-data`` part or form field under
its own name) with their content types, and the request headers, which handlers read through
``context.get_request_header``. That request travels as one framed element (:func:`encode_request`); the
handler's response to it comes back framed too (:func:`encode_reply`), with the content type, status and
headers the handler set on the context, so the adapter answers as TorchServe does.

A frame is ``MAGIC``, a 4-byte big-endian length, a JSON header (names, content types, lengths, headers)
and the raw values one after the other: no base64, no pickle.

A handler that streams (``send_intermediate_predict_response``) writes TorchServe's worker-protocol frames
to ``context.cl_socket``; :func:`decode_predict_response` reads them back, and the reply carries the
intermediate responses ahead of the final one (``Reply.chunks``: their lengths at the start of the body). A
request whose client takes them as they come names a stream (``TorchServeRequest.stream``, a token from
:func:`open_stream`): each intermediate response is also handed to that stream's callback as it is sent.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from modelport.errors import InvalidArgumentError

__all__ = [
    "DESCRIBE_HEADER",
    "EXPLAIN_HEADER",
    "Field",
    "Reply",
    "TorchServeRequest",
    "close_stream",
    "decode_predict_response",
    "decode_reply",
    "decode_request",
    "deliver",
    "encode_reply",
    "encode_request",
    "open_stream",
    "split_chunks",
]

DESCRIBE_HEADER = "describe"  # TorchServe's frontend sets it (value "True") on a describe request
EXPLAIN_HEADER = "explain"  # TorchServe's frontend sets it: "True" on an explanation, "False" on a prediction
REQUEST_MAGIC = b"\x00modelport-torchserve-request/1\x00"
REPLY_MAGIC = b"\x00modelport-torchserve-reply/1\x00"


class Field(NamedTuple):
    """One named input of a request: ``body``, a multipart part or a form field."""

    name: str
    content_type: str
    value: bytes


class TorchServeRequest(NamedTuple):
    """A request as TorchServe's frontend hands it to its worker: named inputs and the request headers."""

    fields: tuple[Field, ...]
    headers: tuple[tuple[str, str], ...]
    stream: str = ""  # the stream its intermediate responses go to as they are sent (open_stream), if any
    sequence: str = ""  # its sequence as TorchServe's gRPC names it (sequence_id), if any

    def row(self, decode: bool = True) -> dict[str, Any]:
        """The dict the handler gets for this request, each value decoded as TorchServe's worker decodes it (with
        ``decode`` false, as its ``decode_input_request=false``: every value as bytes)."""
        return {f.name: field_value(f) if decode else f.value for f in self.fields}

    def describes(self) -> bool:
        """Whether this is TorchServe's describe request (``GET /models/{m}?customized=true``)."""
        return any(name.lower() == DESCRIBE_HEADER and value == "True" for name, value in self.headers)

    def explains(self) -> bool:
        """Whether this is TorchServe's explanation request (``/explanations/{m}``, KServe's ``explain``)."""
        return any(name.lower() == EXPLAIN_HEADER and value == "True" for name, value in self.headers)

    def properties(self) -> dict[str, Any]:
        """TorchServe's per-request properties (``context.get_request_header``): each input's content type
        under its name, then the request headers (as sent and lower case: ASGI lowers header names)."""
        properties: dict[str, Any] = {f.name: {"content-type": f.content_type} for f in self.fields}
        for name, value in self.headers:
            properties[name] = value
            properties["-".join(p.capitalize() for p in name.split("-"))] = value
        return properties


class Reply(NamedTuple):
    """A handler's response to one TorchServe request, with what it set on the context for it; ``chunks``: the
    lengths of the intermediate responses a streaming handler sent, in order at the start of ``body`` (the final
    response is the rest)."""

    body: bytes
    status: int = 200
    content_type: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    chunks: tuple[int, ...] = ()


_STREAMS: dict[str, Callable[[Reply], None]] = {}
_TOKENS = itertools.count(1)  # unique in this process, which holds every stream


def open_stream(callback: Callable[[Reply], None]) -> str:
    """A new stream's token: each intermediate response to a request that names it goes to ``callback`` (called
    on the thread the handler sends from)."""
    token = f"{next(_TOKENS):x}"
    _STREAMS[token] = callback
    return token


def close_stream(token: str) -> None:
    """Forget a stream: what is still sent to it is dropped (its reply carries every response anyway)."""
    _STREAMS.pop(token, None)


def deliver(token: str, reply: Reply) -> None:
    """Hand an intermediate response to its stream, if it is still open."""
    callback = _STREAMS.get(token)
    if callback is not None:
        callback(reply)


def split_chunks(body: bytes, chunks: tuple[int, ...]) -> list[bytes]:
    """A streamed reply's responses one by one (``chunks``: the intermediate ones' lengths), the final one last."""
    parts, start = [], 0
    for length in chunks:
        parts.append(body[start : start + length])
        start += length
    return [*parts, body[start:]]


def field_value(field: Field) -> Any:
    """TorchServe's decoding: ``application/json`` parsed (bytes if it is not JSON), ``text/*`` as str. Its worker
    compares the media type (its frontend drops the parameters) as written: ``Application/JSON`` stays bytes."""
    media = field.content_type.split(";", 1)[0].strip()
    try:
        if media == "application/json":
            return json.loads(field.value.decode("utf-8"))
        if media.startswith("text"):
            return field.value.decode("utf-8")
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        pass
    return field.value


def encode_request(request: TorchServeRequest) -> bytes:
    """One request as one element of the handler model's input."""
    head: dict[str, Any] = {
        "fields": [[f.name, f.content_type, len(f.value)] for f in request.fields],
        "headers": [list(h) for h in request.headers],
    }
    if request.stream:
        head["stream"] = request.stream
    if request.sequence:
        head["sequence"] = request.sequence
    return _frame(REQUEST_MAGIC, head, b"".join(f.value for f in request.fields))


def decode_request(element: bytes) -> TorchServeRequest | None:
    """The request framed in ``element``, or None when it is a bare payload."""
    unframed = _unframe(REQUEST_MAGIC, element)
    if unframed is None:
        return None
    head, data = unframed
    fields, offset = [], 0
    for name, content_type, length in head["fields"]:
        fields.append(Field(str(name), str(content_type), data[offset : offset + int(length)]))
        offset += int(length)
    headers = tuple((str(k), str(v)) for k, v in head["headers"])
    return TorchServeRequest(tuple(fields), headers, str(head.get("stream", "")), str(head.get("sequence", "")))


def encode_reply(reply: Reply) -> bytes:
    """One response, framed with its status, content type and headers."""
    head: dict[str, Any] = {
        "status": reply.status,
        "content_type": reply.content_type,
        "headers": [list(h) for h in reply.headers],
    }
    if reply.chunks:
        head["chunks"] = list(reply.chunks)
    return _frame(REPLY_MAGIC, head, reply.body)


def decode_reply(element: bytes) -> Reply:
    """A framed response, or a bare one (a handler model's response to a bare payload) as it is."""
    unframed = _unframe(REPLY_MAGIC, element)
    if unframed is None:
        return Reply(element)
    head, body = unframed
    headers = tuple((str(k), str(v)) for k, v in head["headers"])
    chunks = tuple(int(n) for n in head.get("chunks", ()))
    return Reply(body, int(head["status"]), str(head["content_type"]), headers, chunks)


def decode_predict_response(frame: bytes) -> list[tuple[str, Reply]]:
    """The responses in one frame of TorchServe's worker protocol (``ts.protocol.otf_message_handler.
    create_predict_response``, which ``send_intermediate_predict_response`` writes to ``context.cl_socket``):
    ``(request id, response)`` for each request it answers."""
    reader = _FrameReader(frame)
    try:
        reader.number()  # the batch's code and message: each response carries its own status
        reader.text()
        answers = []
        while (length := reader.number()) != -1:  # the end of the list
            request_id = reader.take(length).decode()
            content_type = reader.text()
            status = reader.number()
            reader.text()  # the reason phrase
            headers = tuple((reader.text(), reader.text()) for _ in range(reader.number()))
            answers.append((request_id, Reply(reader.take(reader.number()), status, content_type, headers)))
    except (struct.error, UnicodeDecodeError):
        raise InvalidArgumentError("a streamed TorchServe response frame is malformed") from None
    return answers


class _FrameReader:
    """Big-endian ints and length-prefixed values, one after the other."""

    def __init__(self, frame: bytes) -> None:
        self.view = memoryview(frame)
        self.offset = 0

    def number(self) -> int:
        (value,) = struct.unpack_from("!i", self.view, self.offset)
        self.offset += 4
        return int(value)

    def take(self, length: int) -> bytes:
        if length < 0 or self.offset + length > len(self.view):
            raise struct.error("a length runs past the frame")
        self.offset += length
        return bytes(self.view[self.offset - length : self.offset])

    def text(self) -> str:
        return self.take(self.number()).decode()


def _frame(magic: bytes, head: dict[str, Any], data: bytes) -> bytes:
    encoded = json.dumps(head, separators=(",", ":")).encode()
    return b"".join((magic, struct.pack("!I", len(encoded)), encoded, data))


def _unframe(magic: bytes, element: bytes) -> tuple[dict[str, Any], bytes] | None:
    if not element.startswith(magic):
        return None
    start = len(magic) + 4
    try:
        (length,) = struct.unpack("!I", element[len(magic) : start])
        head: dict[str, Any] = json.loads(element[start : start + length])
    except (struct.error, ValueError):
        raise InvalidArgumentError("a framed TorchServe request or response is malformed") from None
    return head, element[start + length :]
