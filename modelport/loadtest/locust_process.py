"""The one adapter around the locust subprocess: command line, progress, results.

locust monkey-patches the standard library with gevent when it is imported, so it always runs
in its own process; its totals come from ``--json-file`` and the exact per-request latencies
from the recorder listener loaded next to the locustfile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ModelportError

__all__ = ["LOCUSTFILES", "LocustOutput", "LocustRun", "run_locust"]

LOCUSTFILES = Path(__file__).parent / "locustfiles"
_GRACE_S = 60.0


@dataclass(frozen=True)
class LocustRun:
    """``users`` spawned at ``spawn_rate``/s, then ``duration_s`` at full load; results into ``workdir``."""

    locustfiles: tuple[Path, ...]
    host: str
    users: int
    spawn_rate: float
    duration_s: float
    workdir: Path
    user_classes: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    ui_port: int | None = None


@dataclass(frozen=True)
class LocustOutput:
    """What one run left behind: locust's JSON stats, the recorder's samples and errors, the log."""

    stats: list[dict[str, Any]]
    samples: dict[str, np.ndarray[Any, Any]] | None
    errors: dict[str, int]
    log: Path
    wall_s: float


def _command(run: LocustRun) -> list[str]:
    files = ",".join(str(p.resolve()) for p in (*run.locustfiles, LOCUSTFILES / "recorder.py"))
    command = [sys.executable, "-m", "locust", "-f", files, "--host", run.host, "-u", str(run.users)]
    command += ["-r", f"{run.spawn_rate:g}", "--json-file", str(run.workdir / "locust"), "--stop-timeout", "10"]
    command += ["--exit-code-on-error", "0", "--loglevel", "WARNING"]
    if run.ui_port is None:
        command += ["--headless", "--only-summary"]
    else:
        command += ["--web-host", "127.0.0.1", "--web-port", str(run.ui_port)]
    return [*command, *run.user_classes]


def run_locust(run: LocustRun, progress: Callable[[float, dict[str, Any]], None] | None = None) -> LocustOutput:
    """Run locust to completion (Ctrl-C in ``--ui`` mode ends it normally) and read its results."""
    run.workdir.mkdir(parents=True, exist_ok=True)
    log = run.workdir / "locust.log"
    env = {**os.environ, **run.env, "MODELPORT_LOADTEST_RECORD": str(run.workdir.resolve()), "PYTHONUNBUFFERED": "1"}
    if run.ui_port is None:
        env["MODELPORT_LOADTEST_DURATION"] = f"{run.duration_s:g}"
    if run.ui_port is not None:
        _interruptible()
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _command(run),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run.workdir,
            preexec_fn=_default_sigint,  # started from a background job, SIGINT would be ignored
        )
        code = _wait(process, run, started, progress)
    wall = time.monotonic() - started
    stats_file = run.workdir / "locust.json"
    if code != 0 or not stats_file.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise ModelportError(f"locust exited with {code} and no results; {log}:\n" + "\n".join(tail))
    stats: list[dict[str, Any]] = json.loads(stats_file.read_text())
    return LocustOutput(stats, _samples(run.workdir), _errors(run.workdir), log, wall)


def _wait(
    process: subprocess.Popen[bytes],
    run: LocustRun,
    started: float,
    progress: Callable[[float, dict[str, Any]], None] | None,
) -> int:
    ramp = run.users / run.spawn_rate
    deadline = None if run.ui_port is not None else started + ramp + run.duration_s + _GRACE_S
    try:
        while process.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                raise ModelportError(f"locust ran {_GRACE_S:g}s past its duration and was stopped")
            if progress is not None:
                progress(time.monotonic() - started, _read_progress(run.workdir))
            time.sleep(0.5)
    except KeyboardInterrupt:  # --ui: the interrupt reached locust too; it saves its results and exits
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return int(process.wait())


def _interruptible() -> None:
    """Ctrl-C ends a ``--ui`` run even when this process was started with SIGINT ignored (a background job)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_progress(workdir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((workdir / "progress.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def _samples(workdir: Path) -> dict[str, np.ndarray[Any, Any]] | None:
    path = workdir / "samples.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _errors(workdir: Path) -> dict[str, int]:
    path = workdir / "errors.json"
    errors: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    return errors
