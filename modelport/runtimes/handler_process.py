"""A TorchServe handler in a worker process of its own (``workers: N`` in a handler model's config.yaml).

One :class:`HandlerWorker` supervises one process, started with ``multiprocessing``'s *spawn* context (a
fresh interpreter: its own ``sys.path`` and modules, no copy of the server's threads or sockets), talking
over one pipe: a batch goes down, its responses or its error come back. The server runs N instances of
the handler runtime, each owning one worker, so the batcher sends each batch to a free worker.

Not ``concurrent.futures.ProcessPoolExecutor``: one process that dies breaks that whole pool (every
future fails, no new work is taken), and it cannot say which worker a task ran on. Here a process that
dies (a segfault, ``os._exit``) fails only the batch it was running, with a 503; a batch that runs past
the model's timeout gets its process killed. Either way the worker is started again (the handler's
``initialize`` runs again) before it takes the next batch, and ``restarts`` counts it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from modelport.errors import DeadlineExceededError, ModelportError, SourceError, UnavailableError, summarize
from modelport.runtimes.base import Arrays, RuntimeOptions
from modelport.runtimes.handler_request import Reply, decode_reply, deliver, encode_reply

__all__ = ["HandlerFaultError", "HandlerWorker"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # initialize may load a large model
_STOP_TIMEOUT_S = 5.0


class HandlerFaultError(RuntimeError):
    """The handler raised in its worker process; the message carries the worker's traceback (for the log)."""


class HandlerWorker:
    """One worker process running the handler of the archive in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, options: RuntimeOptions) -> None:
        self.directory = directory
        # what the handler runs with in its process (this one checks the responses' size)
        self.options = replace(options, worker_process=False, max_response_bytes=0)
        self.timeout_s = options.timeout_s
        self.restarts = 0
        self.process: Any = None
        self._pipe: Connection | None = None
        self._lifeline: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while none runs)."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the process and wait until the handler has initialized (or raise why it could not)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        lifeline, held = context.Pipe(duplex=False)  # its end closes when this process dies, however it dies
        process = context.Process(
            target=serve,
            args=(
                theirs,
                lifeline,
                str(self.directory),
                self.options,
                logging.getLogger().getEffectiveLevel(),
            ),
            name="modelport-handler",
        )
        process.start()
        theirs.close()
        lifeline.close()
        self.process, self._pipe, self._lifeline = process, ours, held
        try:
            status, value = self._receive(START_TIMEOUT_S, "initializing")
        except ModelportError as exc:
            self.stop()
            raise SourceError(f"the handler could not initialize in its worker process: {exc.message}") from None
        if status != "ready":
            self.stop()
            if isinstance(value, ModelportError):
                raise value
            raise SourceError(f"the handler could not initialize in its worker process: {value}")

    def predict(self, inputs: Arrays) -> Arrays:
        """Run one batch in the worker; restart the worker if the batch killed it or ran past the timeout."""
        if self._pipe is None:  # a restart that failed: try again
            self._restart()
        assert self._pipe is not None
        try:
            self._pipe.send(inputs)
            deadline = time.monotonic() + self.timeout_s
            status, value = self._receive(self.timeout_s, "running a batch")
            while status == "part":  # a streaming handler's intermediate response, on its way to its client
                token, reply = value
                deliver(token, decode_reply(reply))
                status, value = self._receive(max(0.0, deadline - time.monotonic()), "running a batch")
        except (DeadlineExceededError, UnavailableError):
            self._restart()
            raise
        if status == "ok":
            outputs: Arrays = value
            return outputs
        if isinstance(value, ModelportError):
            raise value
        raise HandlerFaultError(str(value))

    def stop(self) -> None:
        """Ask the worker to exit, kill it if it does not, and reap it (no orphan, no zombie)."""
        process, pipe, lifeline = self.process, self._pipe, self._lifeline
        self.process = self._pipe = self._lifeline = None
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.send(None)
            pipe.close()
        if process is not None:
            process.join(_STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        if lifeline is not None:
            lifeline.close()

    def _receive(self, timeout: float, doing: str) -> tuple[str, Any]:
        """The worker's next message; Unavailable if it died, DeadlineExceeded (after killing it) if late."""
        process, pipe = self.process, self._pipe  # stop() may clear them meanwhile (an unload past its drain)
        assert pipe is not None and process is not None
        ready = wait([pipe, process.sentinel], timeout)
        if pipe in ready:
            try:
                message: tuple[str, Any] = pipe.recv()
                return message
            except (EOFError, OSError):
                pass  # it died after writing part of an answer, or while the pipe was read
        if not ready:
            log.error("handler worker %s did not finish %s within %gs: killed", process.pid, doing, timeout)
            process.kill()
            raise DeadlineExceededError(f"the handler did not finish within {timeout:g}s")
        process.join(_STOP_TIMEOUT_S)
        log.error("handler worker %s exited with code %s while %s", process.pid, process.exitcode, doing)
        raise UnavailableError(
            f"the handler's worker process exited (code {process.exitcode}) while {doing}", retry_after=1.0
        )

    def _restart(self) -> None:
        self.stop()
        self.restarts += 1
        try:
            self.start()
        except ModelportError:
            log.error("handler worker for %s could not be restarted", self.directory, exc_info=True)
            raise UnavailableError("the handler's worker process is restarting", retry_after=1.0) from None
        log.warning("handler worker for %s restarted (restart %d): pid %s", self.directory, self.restarts, self.pid)


def serve(
    pipe: Connection,
    lifeline: Connection,
    directory: str,
    options: RuntimeOptions,
    log_level: int = logging.WARNING,
) -> None:
    """The worker process: initialize the handler, then answer batches until told to stop or orphaned. It logs
    to the server's stderr at the server's level (the handler's own logs, its ``[METRICS]`` lines)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s %(name)s [handler worker {os.getpid()}]: %(message)s"
    )
    threading.Thread(target=_exit_when_orphaned, args=(lifeline,), daemon=True).start()
    from modelport.manifest import read_manifest
    from modelport.runtimes.base import runtime_class

    directory = os.path.abspath(directory)
    manifest = read_manifest(Path(directory))
    runtime = runtime_class(manifest.format)(Path(directory), manifest, options)
    os.chdir(directory)  # TorchServe's worker runs in the model directory: handlers open files by relative path
    try:
        runtime.load()
    except BaseException as exc:
        traceback.print_exc()  # the server's stderr: the worker's own traceback
        pipe.send(("failed", exc if isinstance(exc, ModelportError) else summarize(exc)))
        return
    pipe.send(("ready", None))
    lock = threading.Lock()  # the handler may send intermediate responses from threads of its own

    def send_part(token: str, reply: Reply) -> None:
        with lock:
            pipe.send(("part", (token, encode_reply(reply))))

    setattr(runtime, "intermediate", send_part)  # noqa: B010  (HandlerRuntime's; handler.py imports this module)
    while True:
        try:
            inputs = pipe.recv()
        except (EOFError, OSError):
            return  # the server went away
        if inputs is None:
            return
        try:
            outputs = runtime.predict(inputs)
            with lock:
                pipe.send(("ok", outputs))
        except Exception as exc:
            with lock:
                pipe.send(("error", _portable(exc)))


def _portable(exc: BaseException) -> object:
    """What crosses the pipe: our own errors as they are, anything else as its traceback's text."""
    if isinstance(exc, ModelportError):
        return exc
    return "".join(traceback.format_exception(exc)).strip()


def _exit_when_orphaned(lifeline: Connection) -> None:
    """Exit at once when the server is gone (its end of ``lifeline`` closed), even mid-batch: no orphans."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(1)
