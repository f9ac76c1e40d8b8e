"""``multipart/form-data`` bodies (``curl -F data=@cat.jpg``), parsed with ``python-multipart``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from modelport.errors import InvalidArgumentError

__all__ = ["is_multipart", "multipart_parts"]


def is_multipart(content_type: str) -> bool:
    """Whether a Content-Type header announces a ``multipart/form-data`` body."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The contents of every part (files and fields), in the order sent; a malformed body is a 400."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidArgumentError("the multipart/form-data body has no boundary in its Content-Type")
    parts: list[bytearray] = []
    ended: list[bool] = []

    def begin() -> None:
        parts.append(bytearray())

    def data(chunk: bytes, start: int, end: int) -> None:
        parts[-1] += chunk[start:end]

    callbacks: MultipartCallbacks = {"on_part_begin": begin, "on_part_data": data, "on_end": lambda: ended.append(True)}
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
    return [bytes(part) for part in parts]
