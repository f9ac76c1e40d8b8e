"""``modelport loadtest``: read the model's metadata, encode requests, run each level in locust, report."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError
from modelport.loadtest.locust_process import LOCUSTFILES, LocustRun, run_locust
from modelport.loadtest.options import Level, LoadTestOptions
from modelport.loadtest.payloads import merge_specs, resolve_specs, sample_inputs
from modelport.loadtest.protocols import Codec, Endpoint, Target, codec_for
from modelport.loadtest.report import LoadTestReport, render_levels, write_csv, write_json
from modelport.loadtest.results import LevelResult, level_result
from modelport.loadtest.server_metrics import Scrape, scrape, server_view
from modelport.loadtest.slo import checked_slos
from modelport.manifest import TensorSpec

__all__ = ["Prepared", "prepare", "run_loadtest"]

Printer = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """A load test ready to run: the endpoint, the specs used, and the plan file the users read."""

    endpoint: Endpoint
    specs: tuple[TensorSpec, ...]
    plan: Path | None
    samples: int


def run_loadtest(options: LoadTestOptions, say: Printer = print) -> LoadTestReport:
    """Run every level of ``options`` and write report.json, report.csv and report.html into ``options.out``."""
    from modelport.loadtest.html import write_report_html

    slos = checked_slos(options.slos, options.max_error_rate)
    options.out.mkdir(parents=True, exist_ok=True)
    for stale in options.out.glob("level*-users*"):  # a previous run's levels would read as this run's
        shutil.rmtree(stale)
    prepared = prepare(options)
    metrics_url = _metrics_url(options)
    target = _describe(options, prepared, metrics_url)
    texts = tuple(slo.text for slo in slos)
    report = LoadTestReport(target, [], texts, options.out, datetime.now(UTC).isoformat(timespec="seconds"))
    locustfile = options.locustfile
    subject = options.model if options.model or locustfile is None else f"locustfile {locustfile.name}"
    say(f"load test: {subject} over {options.protocol} at {options.url}, {len(options.levels)} level(s)")
    for index, level in enumerate(options.levels):
        result = _run_level(options, prepared, level, index, metrics_url, say)
        result.slos = [slo.check(result.measured()) for slo in slos]
        report.levels.append(result)
        write_json(report, options.out / "report.json")  # a partial report survives an interrupted sweep
    report.files = {"json": "report.json", "csv": "report.csv", "html": "report.html"}
    write_json(report, options.out / "report.json")
    write_csv(report, options.out / "report.csv")
    write_report_html(report, options.out / "report.html")
    say(render_levels(report))
    return report


def prepare(options: LoadTestOptions) -> Prepared:
    """Specs from the served metadata (+ ``--input``), request bodies, and one pre-flight request.

    Everything that can be wrong with the URL, model, inputs or data fails here, before any load.
    """
    if options.locustfile is not None:
        if not options.locustfile.is_file():
            raise NotFoundError(f"--locustfile {options.locustfile} not found")
        return Prepared(Endpoint("http", options.url, "", {}, ""), options.inputs, None, 0)
    target = Target(options.url.rstrip("/"), options.model, options.version, options.timeout_s, options.api_key)
    codec = codec_for(options.protocol, target)
    served = _served_specs(codec, options)
    specs = resolve_specs(merge_specs(served, options.inputs), options.batch_size)
    payloads = [codec.encode(arrays) for arrays in sample_inputs(specs, options.data, options.samples, options.seed)]
    why = codec.check(payloads[0])
    if why:
        hint = _payload_hint(specs, options.data)
        raise InvalidArgumentError(f"the first request to {options.model!r} failed, so no load was sent: {why}{hint}")
    return Prepared(codec.endpoint(), specs, _write_plan(options, codec, payloads), len(payloads))


def _served_specs(codec: Codec, options: LoadTestOptions) -> tuple[TensorSpec, ...] | None:
    """The served metadata's inputs; None for a TorchServe without v2 metadata, where ``--input`` declares them
    all (a server that has it, such as modelport, keeps its other inputs where ``--input`` overrides one)."""
    if options.protocol != "torchserve" or not options.inputs:
        return codec.specs()
    try:
        return codec.specs()
    except (NotFoundError, InvalidArgumentError):
        return None


def _payload_hint(specs: tuple[TensorSpec, ...], data: str) -> str:
    """What to do when random bytes went to a model that takes payloads (an image or text step decodes them)."""
    if data != "random" or len(specs) != 1 or specs[0].dtype != "string":
        return ""
    return f" (random bytes are no payload {specs[0].name!r} takes: give --data DIR, a directory of files it does)"


def _write_plan(options: LoadTestOptions, codec: Codec, payloads: list[Any]) -> Path:
    endpoint = codec.endpoint()
    stored = options.out / "payloads.npz"
    np.savez(stored, **{f"body{i}": np.frombuffer(p.body, np.uint8) for i, p in enumerate(payloads)})  # type: ignore[arg-type]
    plan = {
        "transport": endpoint.transport,
        "host": endpoint.host,
        "path": endpoint.path,
        "headers": endpoint.headers,
        "name": endpoint.name,
        "payloads": str(stored.resolve()),
        "payload_headers": [p.headers for p in payloads],
        "rps_per_user": None,
        "timeout_s": options.timeout_s,
    }
    path = options.out / "plan.json"
    path.write_text(json.dumps(plan, indent=2))
    return path


def _level_plan(prepared: Prepared, level: Level, workdir: Path) -> Path | None:
    """The plan with this level's pacing (constant throughput per user for a target rate)."""
    if prepared.plan is None:
        return None
    plan = json.loads(prepared.plan.read_text())
    plan["rps_per_user"] = level.rps / level.users if level.rps else None
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan, indent=2))
    return path


def _run_level(
    options: LoadTestOptions, prepared: Prepared, level: Level, index: int, metrics_url: str | None, say: Printer
) -> LevelResult:
    workdir = options.out / f"level{index + 1}-users{level.users}"
    workdir.mkdir(parents=True, exist_ok=True)
    plan = _level_plan(prepared, level, workdir)
    files = (options.locustfile,) if options.locustfile else (LOCUSTFILES / "users.py",)
    user_class = (
        ()
        if options.locustfile
        else ("ModelportGrpcUser" if prepared.endpoint.transport == "grpc" else "ModelportHttpUser",)
    )
    run = LocustRun(
        locustfiles=tuple(Path(f) for f in files),
        host=options.url,
        users=level.users,
        spawn_rate=options.spawn_rate or float(level.users),
        duration_s=options.duration_s,
        workdir=workdir,
        user_classes=user_class,
        env=_locust_env(plan, options.api_key),
        ui_port=options.ui_port if options.ui else None,
    )
    if options.ui:
        say(f"locust web UI: http://127.0.0.1:{options.ui_port} (Ctrl-C ends the run and writes the report)")
    before = _scrape(metrics_url)
    output = run_locust(run, None if options.quiet else _progress(level, options.duration_s, say))
    after = _scrape(metrics_url)
    result = level_result(level, output)
    if before is not None and after is not None and options.model:
        result.server = server_view(before, after, options.model, options.version)
    if not options.quiet:
        _end_progress()
        latency = result.latency_ms
        say(
            f"  {level.label}: {result.requests} requests, {result.rps:.1f} req/s, p50 {latency['p50']:.2f} ms,"
            f" p99 {latency['p99']:.2f} ms, {result.failures} failures"
        )
    return result


def _locust_env(plan: Path | None, api_key: str) -> dict[str, str]:
    """The plan's path and the token (kept out of the plan file on disk) for the users."""
    env = {"MODELPORT_LOADTEST_PLAN": str(plan.resolve())} if plan else {}
    return {**env, "MODELPORT_LOADTEST_TOKEN": api_key} if api_key else env


def _progress(level: Level, duration: float, say: Printer) -> Callable[[float, dict[str, Any]], None]:
    """A live line on a terminal; elsewhere a line every 5 s."""
    tty = sys.stdout.isatty()
    last = {"printed": time.monotonic()}

    def show(elapsed: float, state: dict[str, Any]) -> None:
        requests, failures = state.get("requests", 0), state.get("failures", 0)
        line = (
            f"  {level.label}: {elapsed:4.0f} s ({duration:g} s at full load), {requests} requests, {failures} failures"
        )
        if tty:
            sys.stdout.write("\r" + line.ljust(78))
            sys.stdout.flush()
        elif time.monotonic() - last["printed"] >= 5:
            last["printed"] = time.monotonic()
            say(line)

    return show


def _end_progress() -> None:
    if sys.stdout.isatty():
        sys.stdout.write("\r" + " " * 78 + "\r")


def _metrics_url(options: LoadTestOptions) -> str | None:
    """``--metrics-url``, else ``URL/metrics`` for the HTTP protocols; checked once before the load."""
    url = options.metrics_url or (options.url.rstrip("/") + "/metrics" if options.url.startswith("http") else None)
    if url is None:
        return None
    try:
        scrape(url)
    except ModelportError as exc:
        if options.metrics_url:
            raise InvalidArgumentError(f"--metrics-url: {exc.message}") from None
        return None
    return url


def _scrape(url: str | None) -> Scrape | None:
    if url is None:
        return None
    try:
        return scrape(url)
    except ModelportError:
        return None


def _describe(options: LoadTestOptions, prepared: Prepared, metrics_url: str | None) -> dict[str, Any]:
    return {
        "url": options.url,
        "protocol": options.protocol,
        "model": options.model,
        "version": options.version,
        "endpoint": prepared.endpoint.path,
        "inputs": [s.describe() for s in prepared.specs],
        "batch_size": options.batch_size,
        "data": options.data,
        "distinct_requests": prepared.samples,
        "duration_s": options.duration_s,
        "levels": [{"users": level.users, "rps": level.rps} for level in options.levels],
        "metrics_url": metrics_url,
        "locustfile": str(options.locustfile) if options.locustfile else None,
        "title": options.title,
    }
