"""A local OTLP/HTTP sink for the serving benchmark's traced systems: it takes ``POST /v1/traces``, counts the
spans (decoding each ``ExportTraceServiceRequest``), answers 200, and reports ``GET /stats`` as JSON.

    python benchmarks/otlp_sink.py     # prints its port on the first line of stdout, then serves until SIGTERM

The benchmark runs it pinned to the load generator's core, so that the traced server pays for making and
exporting its spans (serialization, the HTTP post) but not for receiving them.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_REPLY = ExportTraceServiceResponse().SerializeToString()


class Counts:
    """What the sink received: export requests, spans, body bytes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.spans = self.bytes = 0

    def add(self, body: bytes) -> None:
        export = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
        with self.lock:
            self.requests += 1
            self.spans += spans
            self.bytes += len(body)

    def json(self) -> bytes:
        with self.lock:
            return json.dumps({"requests": self.requests, "spans": self.spans, "bytes": self.bytes}).encode()


def handler(counts: Counts) -> type[BaseHTTPRequestHandler]:
    """The request handler over ``counts``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the exporter's session reuses its connection

        def do_POST(self) -> None:
            counts.add(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self._reply(200, "application/x-protobuf", _REPLY)

        def do_GET(self) -> None:
            self._reply(200, "application/json", counts.json())

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Counts()))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(server.server_address[1], flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
