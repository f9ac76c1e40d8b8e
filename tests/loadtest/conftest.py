"""Load-test fixtures: a real server over fake runtimes, and the CLI run as a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serving import fakes
from tests.serving.processes import Served, serving
from tests.user_cli import run_modelport

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    """One ``modelport loadtest`` process: exit code, output, and its report.json."""

    code: int
    stdout: str
    stderr: str
    out: Path

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data


def modelport(out: Path, *argv: str, timeout: float = 120) -> Run:
    """Run ``modelport ARGV --out OUT`` in its own process (locust must never share ours)."""
    done = modelport_in(ROOT, *argv, "--out", str(out), timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr, out)


def modelport_in(cwd: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``modelport ARGV`` as a user types it in ``cwd``: relative paths and defaults are the user's."""
    return run_modelport(*argv, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory) -> Iterator[Served]:
    """``modelport serve`` over fake echo models (no ML framework), batching greedily."""
    repo = tmp_path_factory.mktemp("loadtest-repo")
    fakes.write_model(repo, "echo")
    fakes.write_model(repo, "failing", runtime="FailingRuntime")
    fakes.write_model(repo, "poison", runtime="PoisonRuntime")
    log = tmp_path_factory.mktemp("loadtest-server") / "server.log"
    with serving(repo, "--log-level", "warning", log=log, timeout=60) as server:
        yield server
