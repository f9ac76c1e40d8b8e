"""The exporter process: fed span records by the serving process over a pipe, it encodes them as OTLP
(:mod:`~modelport.serving.tracing_otlp`) and sends them with the SDK's OTLP exporters' transports (the console
exporter gets the SDK's own spans), so that the encoding and the export run beside the event loop, not on its
core and never under its GIL.

    python -m modelport.serving.tracing_process REPLY_FD KIND...   # started by ExporterProcess, nothing else

Its stdin carries frames: a 4-byte little-endian length, then the JSON of either a list of
:data:`~modelport.serving.tracing_records.Record` (export them) or a float (flush, taking at most that many
seconds). One byte on ``REPLY_FD`` says it has started, and then how each flush ended: done, or failed (an
export failed, or the time was up: the server stops waiting at once, not at its timeout). It exits once its stdin
closes (the server stopped, or died), after exporting what is left. It runs in a session of its own, so that a
Ctrl-C meant for the server does not cut that export short. JSON, not ``marshal`` or ``pickle``: the package loads
no format that can build arbitrary objects, even from its own child's pipe (Python's ``json`` carries the
128-bit trace ids as integers; tuples arrive as lists, which the records are read from by position alike).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import site
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator

from modelport.errors import DependencyError
from modelport.serving.memory import settle_heap
from modelport.serving.tracing_otlp import Batches, Encoder, senders
from modelport.serving.tracing_records import Received
from modelport.serving.tracing_spans import Sink, SpanProcessors, processors, resource

__all__ = ["BacklogError", "ExporterProcess", "main"]

START_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 60.0  # the export of what is left: the exporters' own timeouts (OTEL_EXPORTER_OTLP_TIMEOUT) first
CLOSE_NOTICE_S = 1.0  # an exit that waits longer on the export says so: after "stopped", the log would be silent
_LENGTH = struct.Struct("<I")
# the spans waiting here are tens of thousands of young tuples, none in a cycle: a young-generation collection
# every 700 allocations (Python's default) rescanned them over and over (~10% of this process's CPU)
_GC_YOUNG = 20_000
_DONE, _FAILED = b".", b"!"
LINGER_S = 0.05  # the longest pause between the exporter process's reads of its pipe (_Pacer)
FLUSH_MARGIN_S = 1.0  # beyond its timeout, how long a flush waits for the exporter process's word
PIPE_BYTES = 1 << 20  # the pipe's buffer, asked of Linux (F_SETPIPE_SZ; at most /proc/sys/fs/pipe-max-size)
MAX_PENDING = 16 << 20  # bytes the pipe has not taken yet beyond which frames are refused (BacklogError)
_ROOT = str(Path(__file__).resolve().parents[2])  # where this modelport is imported from: the child imports it too
_log = logging.getLogger(__name__)


class BacklogError(Exception):
    """The exporter process has not read :data:`MAX_PENDING` bytes of its frames: the newest are refused."""


class ExporterProcess:
    """The exporter process of the exporters ``kinds`` (:func:`~modelport.serving.tracing_spans.exporter_kinds`),
    configured by ``environ``: a :class:`~modelport.serving.tracing_spans.Sink` of this process's records.

    Writing never blocks (the event loop ships records: :meth:`~modelport.serving.tracing_spans.Recorder.attach`):
    what its pipe does not take at once waits here, written first at the next write or :meth:`pump`; past
    :data:`MAX_PENDING` a write raises :class:`BacklogError` (the recorder drops those records). :meth:`flush` and
    :meth:`close` wait for the pipe to take everything."""

    def __init__(self, kinds: Sequence[str], environ: Mapping[str, str]) -> None:
        env = {**os.environ, **environ}
        if _ROOT not in (*site.getsitepackages(), site.getusersitepackages()):  # imported from a checkout's path
            env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), _ROOT) if p)
        self._replies, theirs = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs), *kinds],
                stdin=subprocess.PIPE,
                pass_fds=(theirs,),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(theirs)
        assert self.process.stdin is not None
        self._pipe: IO[bytes] = self.process.stdin
        self._fd = self._pipe.fileno()
        self._pending = bytearray()  # the frames' bytes its pipe has not taken yet
        os.set_blocking(self._fd, False)
        with contextlib.suppress(OSError):  # Linux only, and limited: the default (64 KiB) then
            fcntl.fcntl(self._fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        if not self._replied(START_TIMEOUT_S):
            self.close()
            raise DependencyError(f"the tracing exporter process did not start ({self.process.returncode=})")

    def write(self, records: Sequence[Received]) -> None:
        self._send(orjson.dumps(records, default=str, option=orjson.OPT_SERIALIZE_NUMPY))

    def flush(self, timeout_s: float) -> bool:
        """Have the exporter process export what it has within ``timeout_s`` (it bounds each export by that and
        by its exporters' timeouts), returning as soon as it says it is done or failed, or has died."""
        self._forget_replies()  # of an earlier flush that was given up on
        self._send(orjson.dumps(float(timeout_s)), force=True)
        reply = self._reply(timeout_s + FLUSH_MARGIN_S) if self._drain(timeout_s) else None
        if reply != _DONE:
            why = {_FAILED: "an export failed or ran out of time", b"": "it has exited", None: "no answer"}[reply]
            _log.warning("tracing: the exporter process did not flush its spans within %.1f s (%s)", timeout_s, why)
        return reply == _DONE

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it died: nothing to tell it
            if not self._drain(CLOSE_TIMEOUT_S):
                _log.warning(
                    "tracing: the exporter process took no spans for %.0f s; the rest dropped", CLOSE_TIMEOUT_S
                )
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            self.process.wait(CLOSE_NOTICE_S)
        except subprocess.TimeoutExpired:
            _log.warning(
                "tracing: exporting the spans still queued before exit (each export takes at most "
                "OTEL_EXPORTER_OTLP_TIMEOUT or OTEL_BSP_EXPORT_TIMEOUT; all of it at most %.0f s)",
                CLOSE_TIMEOUT_S,
            )
        try:
            self.process.wait(CLOSE_TIMEOUT_S - CLOSE_NOTICE_S)
        except subprocess.TimeoutExpired:
            _log.warning("tracing: the exporter process did not finish in %.0f s; stopped", CLOSE_TIMEOUT_S)
            self.process.kill()
            self.process.wait()
        os.close(self._replies)

    def pump(self) -> None:
        """Write what the pipe takes now of the bytes waiting (raises OSError once the process has died)."""
        if self._pending:
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                return
            del self._pending[:written]

    def _send(self, payload: bytes, force: bool = False) -> None:
        """Write one frame, or what the pipe takes of it (the rest waits), after the frames waiting."""
        frame = _LENGTH.pack(len(payload)) + payload
        self.pump()
        if self._pending:
            if not force and len(self._pending) + len(frame) > MAX_PENDING:
                raise BacklogError(f"the exporter process has not read {len(self._pending) >> 20} MiB of spans")
            self._pending += frame
            return
        try:
            written = os.write(self._fd, frame)
        except BlockingIOError:
            written = 0
        if written < len(frame):
            self._pending += memoryview(frame)[written:]

    def _drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the pipe to take every byte waiting: whether it did."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            left = deadline - time.monotonic()
            if not self._pending or left <= 0:
                return not self._pending
            select.select([], [self._fd], [], left)

    def _replied(self, timeout_s: float) -> bool:
        return self._reply(timeout_s) == _DONE

    def _reply(self, timeout_s: float) -> bytes | None:
        """The exporter process's next byte (b"" once it has exited), or None when none came in ``timeout_s``."""
        ready, _, _ = select.select([self._replies], [], [], timeout_s)
        return os.read(self._replies, 1) if ready else None

    def _forget_replies(self) -> None:
        """Drop the words already sent (of a flush given up on): they would answer the next flush."""
        while self._reply(0):
            pass


def main(argv: Sequence[str]) -> int:
    """The exporter process (see the module docstring): ``argv`` is ``REPLY_FD KIND...``."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s [tracing exporter]: %(message)s")
    replies, kinds = int(argv[0]), argv[1:]
    ids = TracerProvider(shutdown_on_exit=False).id_generator  # as the server's: OTEL_PYTHON_ID_GENERATOR
    sink = _sinks(kinds, ids)
    settle_heap(_GC_YOUNG)  # the SDK, the exporters' clients: long-lived, never rescanned
    os.write(replies, _DONE)
    stream = sys.stdin.buffer
    pacer = _Pacer(stream.fileno())
    while True:
        pacer.wait()
        message = _receive(stream, pacer)
        if message is None:
            break
        if isinstance(message, float):
            pacer.reset()  # a flush waits for its reply: what follows it is read at once
            os.write(replies, _DONE if sink.flush(message) else _FAILED)
        else:
            sink.write(message)
    sink.close()
    return 0


def _sinks(kinds: Sequence[str], ids: IdGenerator) -> Sink:
    """OTLP encoded from the records (:mod:`~modelport.serving.tracing_otlp`); the console's through the SDK."""
    found: list[Sink] = [SpanProcessors(processors([k for k in kinds if k == "console"]), resource(), ids)]
    if otlp := senders(kinds):
        found.append(Batches(Encoder(resource(), ids), otlp))
    return found[0] if len(found) == 1 else _All(found)


class _All:
    """Every sink of a list."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def write(self, records: Sequence[Received]) -> None:
        for sink in self.sinks:
            sink.write(records)

    def flush(self, timeout_s: float) -> bool:
        flushed = [sink.flush(timeout_s) for sink in self.sinks]  # every sink, whether or not one failed
        return all(flushed)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class _Pacer:
    """When the pipe holds nothing more to read, waits before the next read, so that the frames (the server ships
    every few milliseconds) are read, encoded and sent in bursts: a wake-up of this process after the serving core
    or the load ran on its core finds its caches cold, and each cost it ~0.3 ms (frames at 7,000 records/s fed
    through a real pipe: 32 us of this process's CPU a record read as they come, 25-28 with a 50 ms pause). The
    pause is at most :data:`LINGER_S`, and shorter when the frames, at the rate they came in the last pause and
    burst, would fill more than a quarter of the pipe's buffer (the server then keeps the rest itself)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:  # the server asks Linux for PIPE_BYTES (Linux only; the default, 64 KiB, where refused)
            size = fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
        except OSError:
            size = 1 << 16
        self.room = max(size, 1 << 12) // 4
        self.since, self.read = time.monotonic(), 0
        self.sleep = time.sleep
        self.reset()

    def reset(self) -> None:
        """No pause before the next read."""
        self.skip = True

    def wait(self) -> None:
        if self.skip:
            self.skip = False
            return
        if select.select([self.fd], [], [], 0)[0]:  # more waiting already
            return
        now = time.monotonic()
        rate = self.read / max(now - self.since, 1e-3)  # bytes a second, over the last pause and burst
        self.since, self.read = now, 0
        self.sleep(min(LINGER_S, self.room / rate) if rate else LINGER_S)


def _receive(stream: IO[bytes], pacer: _Pacer) -> Any:
    """The next frame's value; None once the stream has ended."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    pacer.read += size
    return orjson.loads(stream.read(size))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
