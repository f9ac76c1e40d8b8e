"""``serving.py --profile DIR``: py-spy profiles of the modelport server under load.

For each modelport system and concurrency of the run, after the measured rounds, the cell's load runs
once more per format while py-spy records the server (py-spy writes one format per recording): a
speedscope file (https://www.speedscope.app) and a flamegraph SVG, named ``MODEL-SYSTEM-cC.*``. These
cells are not measurements (sampling pauses the server); their req/s are recorded only as context.
py-spy runs on the load generator's core.

* ``attach`` (preferred): ``py-spy record --pid`` on the running, pinned server, stopped with SIGINT
  when the cell's load ends, so the profile is exactly the cell;
* ``launch`` (when py-spy cannot attach here, e.g. ptrace is not allowed): a fresh server started under
  ``py-spy record -- python -m modelport.cli serve ...`` (the launcher's command prefix), stopped after
  the cell; its profile also covers the server's startup and drain.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from bench_models import BenchModel
from serving_config import PY, SERVER_OF, Config, pinned
from serving_load import Payload, run_load
from serving_procs import Server, descendants, modelport_server, wait_valid

FORMATS = {"speedscope": "speedscope.json", "flamegraph": "svg"}


class ProfileError(Exception):
    """A recording that did not produce its file."""


def pyspy() -> str | None:
    """The py-spy executable (the virtualenv's first), or None."""
    local = Path(PY).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def attach_problem(spy: str, pid: int) -> str | None:
    """None if py-spy can read ``pid``'s stacks here (a ``py-spy dump``), else why not."""
    done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == 0:
        return None
    return " ".join((done.stderr or done.stdout).split())[:300] or f"py-spy dump exited with {done.returncode}"


def profile_model(
    cfg: Config, model: BenchModel, repo: Path, work: Path, running: dict[str, Server], payloads: dict[str, Payload]
) -> dict[str, Any]:
    """Every profile of one model: the method used (and why), and one entry per file."""
    assert cfg.profile is not None
    spy, server = pyspy(), running.get("modelport")
    if spy is None:
        return {"error": "py-spy is not installed (it is in the dev extra: pip install -c constraints.txt py-spy)"}
    if server is None or server.proc is None or server.error is not None:
        return {"error": "no running modelport server to profile"}
    why = attach_problem(spy, server.proc.pid) if cfg.profile_mode != "launch" else "not tried (--profile-mode launch)"
    if why is not None and cfg.profile_mode == "attach":
        return {"error": f"py-spy cannot attach: {why}"}
    method = "attach" if why is None else "launch"
    print(f"  profiling with py-spy ({method}" + (f": {why})" if why else ")"))
    cfg.profile.mkdir(parents=True, exist_ok=True)
    files = []
    for system in (s for s in cfg.systems if SERVER_OF.get(s) == "modelport"):
        for concurrency in cfg.concurrency:
            for fmt, suffix in FORMATS.items():
                out = cfg.profile / f"{model.name}-{system}-c{concurrency}.{suffix}"
                entry: dict[str, Any] = {"system": system, "concurrency": concurrency, "format": fmt, "file": str(out)}
                try:
                    if method == "attach":
                        load = record_attached(cfg, spy, server, payloads[system], concurrency, (fmt, out))
                    else:
                        load = record_launched(cfg, spy, (model, repo, work), payloads[system], concurrency, (fmt, out))
                except (ProfileError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                    entry["error"] = str(exc)
                else:
                    entry.update(rps=load["rps"], p99_ms=load["p99_ms"], errors=load["non_2xx"] + load["socket_errors"])
                print(f"  profile {out.name}: " + entry.get("error", f"{entry.get('rps', 0):.0f} req/s under py-spy"))
                files.append(entry)
    return {"method": method, "why_not_attach": why, "files": files}


def record_attached(
    cfg: Config, spy: str, server: Server, payload: Payload, concurrency: int, output: tuple[str, Path]
) -> dict[str, Any]:
    """``py-spy record --pid`` for the duration of one load cell; the cell's load result."""
    assert server.proc is not None
    fmt, out = output
    cmd = [spy, "record", "--pid", str(server.proc.pid), "--format", fmt, "--output", str(out)]
    recorder = subprocess.Popen(pinned(cmd, cfg.client_cpu), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        load = run_load(cfg, server.url, server.grpc, payload, concurrency)
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy stops sampling and writes the file
        said, _ = recorder.communicate(timeout=120)
    if recorder.returncode != 0 or not out.exists():
        raise ProfileError(f"py-spy record exited with {recorder.returncode}: {said.decode(errors='replace')[-300:]}")
    return load


def record_launched(
    cfg: Config,
    spy: str,
    where: tuple[BenchModel, Path, Path],
    payload: Payload,
    concurrency: int,
    output: tuple[str, Path],
) -> dict[str, Any]:
    """A fresh modelport server under ``py-spy record -- ...``, one load cell, then stopped; the cell's load."""
    fmt, out = output
    wrapper = tuple(pinned([spy, "record", "--format", fmt, "--output", str(out), "--"], cfg.client_cpu))
    with modelport_server(cfg, *where, wrapper=wrapper) as server:
        wait_valid(server, payload, cfg.startup_timeout)
        if server.error is not None or server.proc is None:
            raise ProfileError(f"the server under py-spy did not start: {server.error}")
        load = run_load(cfg, server.url, server.grpc, payload, concurrency)
        for pid in descendants(server.proc.pid)[:1]:  # the server: py-spy writes the file once it exits
            os.kill(pid, signal.SIGTERM)
        server.proc.wait(timeout=cfg.startup_timeout)
    if not out.exists():
        raise ProfileError(f"py-spy wrote no {out.name} (exit code {server.proc.returncode}); see {server.log}")
    return load
