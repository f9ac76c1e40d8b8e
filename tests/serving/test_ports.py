"""A busy port is one clear error: a second server neither starts nor splits the first one's traffic."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modelport.launcher import LaunchOptions, launched, read_port_file
from tests.serving.processes import ROOT, free_port, serving, wait_until


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


def test_port_file_holds_the_bound_ports_and_goes_with_the_server(tmp_path):
    """``--port-file`` (relative, from the caller's directory) appears once both ports listen, then is removed."""
    (tmp_path / "repo").mkdir()
    command = [sys.executable, "-m", "modelport.cli", "serve", "repo", "--http-port", "0", "--grpc-port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([*command, "--port-file", "ports.json"], cwd=tmp_path, env=env)
    try:
        wait_until(lambda: read_port_file(tmp_path / "ports.json") is not None, what="the port file")
        ports = read_port_file(tmp_path / "ports.json")
        assert ports is not None
        assert ports["pid"] == process.pid
        assert ports["http"] > 0 and ports["grpc"] > 0 and ports["http"] != ports["grpc"]
        with socket.create_connection(("127.0.0.1", ports["grpc"]), timeout=5):
            pass
        assert httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/live", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert not (tmp_path / "ports.json").exists()


def test_the_launcher_runs_the_server_under_its_command_prefix(tmp_path):
    """``command_prefix`` goes before the server command: here ``taskset`` pins the server to one core."""
    cpu = min(os.sched_getaffinity(0))
    options = LaunchOptions(command_prefix=("taskset", "-c", str(cpu)), env={"PYTHONPATH": str(ROOT)})
    with launched(tmp_path, options=options) as server:
        assert os.sched_getaffinity(server.process.pid) == {cpu}
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    assert server.process.returncode == 0
