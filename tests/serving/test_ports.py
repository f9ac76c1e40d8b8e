"""A busy port is one clear error: a second server neither starts nor splits the first one's traffic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.processes import ROOT, free_port, serving


def _second_server(repo: Path, http_port: int, grpc_port: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelport.cli", "serve", str(repo)]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("busy", ["http", "grpc"])
def test_a_busy_port_is_one_line_and_the_first_server_keeps_it(tmp_path, busy):
    with serving(tmp_path) as first:
        http_port, grpc_port = int(first.url.rsplit(":", 1)[1]), int(first.grpc.rsplit(":", 1)[1])
        ports = (http_port, free_port()) if busy == "http" else (free_port(), grpc_port)
        second = _second_server(tmp_path, *ports)
        assert first.process.poll() is None
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "Traceback" not in second.stderr
    flag = "--http-port" if busy == "http" else "--grpc-port"
    assert lines[0].startswith("modelport serve: error:"), lines
    assert flag in lines[0], lines
    assert str(ports[0] if busy == "http" else ports[1]) in lines[0], lines
