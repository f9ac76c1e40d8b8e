"""Locust listener that keeps every request's exact latency, for percentiles over time and the report.

Loaded by locust next to the users' locustfile (``-f users.py,recorder.py``, or a user's own
locustfile). It writes ``progress.json`` about once a second while the test runs and, when locust
quits, ``samples.npz`` (end time, latency in ms, failed flag per request) and ``errors.json``
into ``MODELPORT_LOADTEST_RECORD``. With ``MODELPORT_LOADTEST_DURATION`` it ends the run that many
seconds after every user has spawned (locust's ``--run-time`` would count the start-up and ramp too).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
import numpy as np
from locust import events
from locust.env import Environment

OUT = Path(os.environ["MODELPORT_LOADTEST_RECORD"])
_ends: list[float] = []
_latencies: list[float] = []
_failed: list[bool] = []
_errors: Counter[str] = Counter()
_state = {"next_progress": 0.0, "failures": 0}
_DURATION = float(os.environ.get("MODELPORT_LOADTEST_DURATION") or 0)
_environment: list[Environment] = []


def _on_init(environment: Environment, **_: Any) -> None:
    _environment.append(environment)


def _on_spawning_complete(**_: Any) -> None:
    runner = _environment[0].runner if _environment else None
    if _DURATION and runner is not None and len(_environment) == 1:
        _environment.append(_environment[0])  # once: a later re-spawn does not extend the run
        gevent.spawn_later(_DURATION, runner.quit)


def _on_request(response_time: float | None, name: str, exception: BaseException | None = None, **_: Any) -> None:
    now = time.time()
    _ends.append(now)
    _latencies.append(float(response_time or 0.0))
    _failed.append(exception is not None)
    if exception is not None:
        _errors[f"{type(exception).__name__}: {exception}"[:300]] += 1
        _state["failures"] += 1
    if now >= _state["next_progress"]:
        _state["next_progress"] = now + 1.0
        progress = {"time": now, "requests": len(_ends), "failures": _state["failures"]}
        (OUT / "progress.json.tmp").write_text(json.dumps(progress))
        (OUT / "progress.json.tmp").replace(OUT / "progress.json")


def _on_quit(**_: Any) -> None:
    np.savez(
        OUT / "samples.npz",
        end=np.asarray(_ends, np.float64),
        latency_ms=np.asarray(_latencies, np.float64),
        failed=np.asarray(_failed, bool),
    )
    (OUT / "errors.json").write_text(json.dumps(dict(_errors.most_common())))


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
events.spawning_complete.add_listener(_on_spawning_complete)  # type: ignore[no-untyped-call]
events.request.add_listener(_on_request)  # type: ignore[no-untyped-call]
events.quit.add_listener(_on_quit)  # type: ignore[no-untyped-call]
