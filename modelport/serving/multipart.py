"""``multipart/form-data`` bodies (``curl -F data=@cat.jpg``), parsed with ``python-multipart``."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from modelport.errors import InvalidArgumentError

__all__ = ["Part", "is_multipart", "multipart_fields", "multipart_parts"]


def is_multipart(content_type: str) -> bool:
    """Whether a Content-Type header announces a ``multipart/form-data`` body."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


class Part(NamedTuple):
    """One part: its form name (Content-Disposition), its Content-Type ("" when it has none) and contents."""

    name: str
    content_type: str
    data: bytes


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The contents of every part (files and fields), in the order sent; a malformed body is a 400."""
    return [part.data for part in multipart_fields(body, content_type)]


def multipart_fields(body: bytes, content_type: str) -> list[Part]:
    """Every part with its name and Content-Type, in the order sent; a malformed body is a 400."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidArgumentError("the multipart/form-data body has no boundary in its Content-Type")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = [bytearray(), bytearray()]
    ended: list[bool] = []

    def begin() -> None:
        parts.append(({}, bytearray()))

    def field(chunk: bytes, start: int, end: int) -> None:
        header[0] += chunk[start:end]

    def value(chunk: bytes, start: int, end: int) -> None:
        header[1] += chunk[start:end]

    def header_end() -> None:
        parts[-1][0][bytes(header[0]).lower()] = bytes(header[1])
        header[0], header[1] = bytearray(), bytearray()

    def data(chunk: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(chunk[start:end])

    callbacks: MultipartCallbacks = {
        "on_part_begin": begin,
        "on_header_field": field,
        "on_header_value": value,
        "on_header_end": header_end,
        "on_part_data": data,
        "on_end": lambda: ended.append(True),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidArgumentError(f"the multipart/form-data body is malformed: {exc}") from None
    if not ended:
        raise InvalidArgumentError("the multipart/form-data body is truncated (no closing boundary)")
    if not parts:
        raise InvalidArgumentError("the multipart/form-data body has no parts")
    return [_part(headers, bytes(contents)) for headers, contents in parts]


def _part(headers: dict[bytes, bytes], contents: bytes) -> Part:
    _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
    name = disposition.get(b"name", b"").decode("utf-8", errors="replace")
    return Part(name, headers.get(b"content-type", b"").decode("latin-1").strip(), contents)
