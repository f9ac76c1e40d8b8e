"""Fallback load generator (used when ``wrk`` is not installed): asyncio, raw keep-alive HTTP/1.1.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/v2/models/m/infer --body body.json [--body b2 ...] \
        --concurrency 8 --duration 10 [--header "Name: value" ...]

``C`` connections each send the POST back to back for ``duration`` seconds (with several ``--body`` files,
each connection cycles through them, starting at a different one); prints one JSON
object with the same fields the wrk parser produces. It is slower than wrk (it is Python), so
absolute req/s under it are a lower bound; compare systems only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Tally:
    """What all connections observed."""

    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    socket_errors: int = 0


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    """Host, port and the raw request bytes for ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}", *headers]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def connection(host: str, port: int, requests: list[bytes], deadline: float, tally: Tally) -> None:
    """One keep-alive connection sending ``requests`` in turn until ``deadline`` (reconnecting on errors)."""
    sent = 0
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.socket_errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(requests[sent % len(requests)])
                sent += 1
                status = await read_response(reader)
                tally.latencies.append(time.perf_counter() - start)
                if not 200 <= status < 300:
                    tally.non_2xx += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.socket_errors += 1
        finally:
            writer.close()


async def run(url: str, bodies: list[bytes], headers: list[str], concurrency: int, duration: float) -> dict[str, Any]:
    """Drive the load and summarise it."""
    built = [build_request(url, body, headers) for body in bodies]
    host, port = built[0][:2]
    requests = [request for _, _, request in built]
    tally = Tally()
    start = time.perf_counter()
    deadline = start + duration
    turns = [requests[i % len(requests) :] + requests[: i % len(requests)] for i in range(concurrency)]
    await asyncio.gather(*(connection(host, port, turn, deadline, tally) for turn in turns))
    return summary(tally, time.perf_counter() - start)


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    """req/s, p50/p99 (ms) and error counts: the shape every load generator of the benchmarks reports."""
    ordered = sorted(tally.latencies)

    def pct(q: float) -> float:
        return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {
        "requests": len(ordered),
        "seconds": seconds,
        "rps": len(ordered) / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "non_2xx": tally.non_2xx,
        "socket_errors": tally.socket_errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", action="append", required=True, help="file holding a request body, repeatable")
    parser.add_argument("--header", action="append", default=[], help="extra header line, repeatable")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    bodies = []
    for path in args.body:
        with open(path, "rb") as f:
            bodies.append(f.read())
    result = asyncio.run(run(args.url, bodies, args.header, args.concurrency, args.duration))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
