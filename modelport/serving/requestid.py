"""Request ids: taken from ``X-Request-ID`` (or made), echoed in the response, attached to log records."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import uuid

__all__ = ["REQUEST_ID", "RequestIdFilter", "request_id_of"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# unique per process start, then a counter: a uuid4 per request costs a urandom call (~10 us)
_PREFIX = uuid.uuid4().hex[:12]
_COUNTER = itertools.count(1)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's ``X-Request-ID`` when it is a sane token (letters, digits, ``._:-``, 1-64), else a new id."""
    for key, value in headers:
        if key == b"x-request-id":
            if _VALID.match(value):
                return value.decode()
            break
    return f"{_PREFIX}-{hex(next(_COUNTER))[2:]}"  # (a format spec compiles to a str.format call: slower)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
