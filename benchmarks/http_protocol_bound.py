"""What answering from uvicorn's HTTP protocol, without the ASGI cycle, can save per request at best.

Three servers return the same fixed reply to a POST (a KServe v2 JSON body of the MLP's size), each in
its own process pinned to the server core, on uvicorn with httptools and uvloop:

* ``asgi``: uvicorn's null ASGI app (reads the body with ``receive``, two ``send`` calls), the ceiling of
  any ASGI app on uvicorn;
* ``proto-task``: a subclass of uvicorn's ``HttpToolsProtocol`` that skips the ASGI scope and
  ``RequestResponseCycle``: the body gathered in the parser callbacks, an asyncio task per request (as a
  handler that awaits the batcher needs), the reply written in one ``transport.write``;
* ``proto-sync``: the same, writing the reply from the parser callback (no task): the protocol's floor.

The serving benchmarks' load generator (wrk when installed, else ``loadgen.py``; pinned to the client core)
drives each at each concurrency, alternating between the servers for ``--rounds`` rounds; the report (printed,
and ``--out`` JSON) is each server's median req/s and CPU microseconds per request (user + system time of the
server process over the cell / requests), and the savings against ``asgi``.

    python benchmarks/http_protocol_bound.py --rounds 5 --duration 3 --concurrency 1,32 [--quick]

Measured 2026-12-06 (2 shared cores, noisy; 3 rounds): CPU per request asgi 58.8 / proto-task 28.5 /
proto-sync 23.9 us at c=1, 44.8 / 16.4 / 14.5 us at c=32: a task-per-request protocol saves ~28-30 us a
request over the ASGI cycle, which is why ``modelport/serving/httpproto.py`` exists.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_config import add_run_arguments, pinned, run_config, run_meta  # noqa: E402
from serving_load import Payload, run_load  # noqa: E402
from serving_procs import cpu_seconds, free_port, wait_answering  # noqa: E402

SERVERS = ("asgi", "proto-task", "proto-sync")
REQUEST = b'{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[' + b",".join([b"0.5"] * 64) + b"]}]}"
REPLY = (
    b'{"model_name":"null","outputs":[{"name":"y","shape":[1,10],"datatype":"FP32","data":['
    + b",".join([b"0.123456"] * 10)
    + b"]}]}"
)


def null_app() -> Any:
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())],
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(start)
        await send({"type": "http.response.body", "body": REPLY})

    return app


def protocol_class(with_task: bool) -> type:
    """``HttpToolsProtocol`` answering every request itself (keep-alive only: enough for wrk)."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class Direct(HttpToolsProtocol):  # type: ignore[misc]
        def on_message_begin(self) -> None:
            self.url = b""
            self.headers = []
            self.body: list[bytes] = []

        def on_headers_complete(self) -> None:
            self.keep = self.parser.should_keep_alive()

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            if with_task:
                task = self.loop.create_task(self.answer(b"".join(self.body)))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
            else:
                self.write(b"".join(self.body))

        async def answer(self, body: bytes) -> None:
            self.write(body)

        def write(self, body: bytes) -> None:
            head = [STATUS_LINE[200]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: application/json\r\ncontent-length: ", str(len(REPLY)).encode(), b"\r\n\r\n"]
            self.transport.write(b"".join([*head, REPLY]))
            self.on_response_complete()

    return Direct


def serve(which: str, port: int) -> None:
    import uvicorn
    import uvloop

    http: Any = "httptools" if which == "asgi" else protocol_class(which == "proto-task")
    config = uvicorn.Config(null_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=http)
    config.access_log = False
    uvloop.run(uvicorn.Server(config).serve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "the three servers")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "http_protocol_bound.json")
    parser.add_argument("--serve", nargs=2, metavar=("SERVER", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    if args.duration is None:
        args.duration = 1.0 if args.quick else 3.0
    cfg = run_config(args, models=["null"], ts_batch_size=1, ts_max_batch_delay_ms=0, out=args.out)
    work = Path(tempfile.mkdtemp(prefix="modelport-proto-bound-"))
    (work / "body.json").write_bytes(REQUEST)
    payload = Payload("v2", "/v2/models/null/infer", work / "body.json", 10)
    ports = {which: free_port() for which in SERVERS}
    child = pinned([sys.executable, __file__, "--serve"], cfg.server_cpu)
    procs = {which: subprocess.Popen([*child, which, str(port)]) for which, port in ports.items()}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for port in ports.values():
            wait_answering(f"http://127.0.0.1:{port}/v2/models/null/infer", REQUEST, 30.0, expect=REPLY)
        for _ in range(cfg.rounds):
            for concurrency in cfg.concurrency:
                for which, port in ports.items():
                    before = cpu_seconds(procs[which].pid)
                    load = run_load(cfg, f"http://127.0.0.1:{port}", None, payload, concurrency)
                    used = cpu_seconds(procs[which].pid) - before
                    runs.setdefault((which, concurrency), []).append(
                        (load["rps"], 1e6 * used / max(load["requests"], 1))
                    )
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    cells = []
    for concurrency in cfg.concurrency:
        base = statistics.median(us for _, us in runs[("asgi", concurrency)])
        for which in SERVERS:
            rps = statistics.median(r for r, _ in runs[(which, concurrency)])
            us = statistics.median(u for _, u in runs[(which, concurrency)])
            cells.append({"server": which, "concurrency": concurrency, "rps": rps, "cpu_us_per_request": us})
            cells[-1]["saves_us_vs_asgi"] = base - us
            line = f"c={concurrency:<3d} {which:11s} {rps:9.0f} req/s  {us:6.1f} CPU us/req"
            print(f"{line}  saves {base - us:5.1f} us vs asgi")
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps({"meta": run_meta(cfg, "http_protocol_bound.py", argv), "cells": cells}, indent=2))
    print(f"load generator: {cfg.loadgen}; results: {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
