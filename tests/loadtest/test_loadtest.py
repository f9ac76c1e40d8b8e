"""Short real locust runs against a real server: every protocol, a sweep, SLO gates, clear early errors."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.loadtest.conftest import ROOT, modelport, modelport_in
from tests.serving import fakes
from tests.serving.processes import free_port, serving, wait_until

HTTP_PROTOCOLS = ["v2", "v2-binary", "tfserving", "torchserve"]


def _address(server, protocol: str) -> list[str]:
    if protocol.endswith("grpc"):
        return [server.grpc, "--metrics-url", f"{server.url}/metrics"]
    return [server.url]


@pytest.mark.parametrize("protocol", [*HTTP_PROTOCOLS, "v2-grpc"])
def test_each_protocol_sends_real_load(echo_server, tmp_path, protocol):
    run = modelport(
        tmp_path,
        "loadtest",
        *_address(echo_server, protocol),
        "--model",
        "echo",
        "--protocol",
        protocol,
        "--users",
        "2",
        "--duration",
        "2s",
        "--batch-size",
        "2",
    )
    assert run.code == 0, run.stderr
    level = run.report()["levels"][0]
    assert level["requests"] > 50 and level["failures"] == 0, level["errors"]
    assert level["latency_source"] == "exact"
    assert 0 < level["latency_ms"]["p50"] <= level["latency_ms"]["p99"] <= level["latency_ms"]["max"]
    server = level["server"]
    assert server["batch_size"]["count"] > 0 and server["batch_size"]["mean"] >= 2, "every request carried 2 rows"
    assert sum(server["requests_by_outcome"].values()) >= level["requests"]
    assert run.report()["target"]["inputs"] == ["x:float32:2x3"]


# TensorFlow's C++ lines, some written before its log level applies (both processes import it)
_TF_NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|cudart_stub|oneDNN|cpu_feature_guard", re.M)


@pytest.mark.tf
def test_tfserving_grpc_protocol(tmp_path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo", config={"version_labels": {"stable": 1}})
    log = tmp_path / "server.log"
    inherited = {"TF_CPP_MIN_LOG_LEVEL": "1"}  # what a parent that imported TensorFlow passes on (TF sets it)
    with serving(repo, "--tfserving-grpc", "--log-level", "warning", env=inherited, log=log, timeout=120) as server:
        # a version label (TF Serving's ModelSpec.version_label): int("stable") was a ValueError traceback
        labelled = modelport(
            tmp_path / "labelled",
            "loadtest",
            *_address(server, "tfserving-grpc"),
            *("--model", "echo", "--version", "stable", "--protocol", "tfserving-grpc", "--duration", "1s"),
        )
        run = modelport(
            tmp_path / "out",
            "loadtest",
            *_address(server, "tfserving-grpc"),
            "--model",
            "echo",
            "--protocol",
            "tfserving-grpc",
            "--users",
            "2",
            "--duration",
            "2s",
        )
    assert run.code == 0, run.stderr
    level = run.report()["levels"][0]
    assert level["requests"] > 50 and level["failures"] == 0, level["errors"]
    assert level["server"]["requests_by_outcome"]
    assert labelled.code == 0 and labelled.report()["levels"][0]["requests"] > 0, labelled.stderr
    assert not _TF_NOISE.search(run.stderr), run.stderr
    assert not _TF_NOISE.search(log.read_text()), log.read_text()


def test_sweep_with_slos_that_hold_writes_every_report(echo_server, tmp_path):
    run = modelport(
        tmp_path,
        "loadtest",
        echo_server.url,
        "--model",
        "echo",
        "--users",
        "1,4",
        "--duration",
        "2s",
        "--slo",
        "error_rate<1%",
        "--slo",
        "p99<2s",
    )
    assert run.code == 0, run.stderr
    assert "SLOs: all held" in run.stdout and "report.html" in run.stdout
    report = run.report()
    assert [lv["users"] for lv in report["levels"]] == [1, 4] and report["passed"]
    assert report["max_rps_under_slo"] == max(lv["rps"] for lv in report["levels"])
    assert all(lv["timeline"]["rps"] and lv["server"]["queue_ms"] for lv in report["levels"])
    csv_lines = (tmp_path / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("users,target_rps")
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4, "timeline, sweep curve, queue/compute and batch-size plots"
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "All SLOs held" in html


def test_failing_slo_exits_1_and_says_by_how_much(echo_server, tmp_path):
    """A paced run (2 users, 40 req/s in all) cannot reach rps>1000: exit 1, the failure named with its gap."""
    run = modelport(
        tmp_path,
        "loadtest",
        echo_server.url,
        "--model",
        "echo",
        "--users",
        "2",
        "--rps",
        "40",
        "--duration",
        "3s",
        "--slo",
        "rps>1000",
        "--slo",
        "p99<5s",
    )
    assert run.code == 1, run.stderr
    report = run.report()
    level = report["levels"][0]
    assert 20 < level["rps"] < 60, "constant throughput per user paces the load"
    assert not report["passed"] and len(report["failed_slos"]) == 1
    assert re.match(
        r"rps>1000 at users=2 rps=40: rps \d+\.\d req/s, objective > 1000\.0 req/s: 9\d\.\d% under",
        report["failed_slos"][0],
    )
    assert "SLOs FAILED" in run.stdout and "rps>1000" in run.stdout
    assert [s["passed"] for s in level["slos"]] == [False, True, True], "the two SLOs and --max-error-rate's"


def test_failed_requests_exit_1_without_any_slo(echo_server, tmp_path):
    """The pre-flight request passes (row 0), the other rows fail on the server: exit 1 and report.json says why;
    --max-error-rate, or an --slo on error_rate, sets how many failures a run may have."""
    rows = np.full((4, 3), 13, dtype=np.float32)  # PoisonRuntime fails every batch holding a 13
    rows[0] = 1
    np.savez(tmp_path / "rows.npz", x=rows)
    args = ["loadtest", echo_server.url, "--model", "poison", "--data", str(tmp_path / "rows.npz"), "--duration", "1s"]
    run = modelport(tmp_path / "default", *args)
    assert run.code == 1, run.stdout + run.stderr
    report = run.report()
    level = report["levels"][0]
    assert 0.5 < level["error_rate"] < 0.9 and not report["passed"] and not level["passed"]
    assert report["slos"] == ["error_rate<=0% (--max-error-rate)"]
    (why,) = report["failed_slos"]
    assert why.startswith("error_rate<=0% (--max-error-rate) at users=1: error_rate "), why
    assert f"({level['failures']} of {level['requests']} requests failed; most often (" in why, why
    assert "HTTP 500" in why and "SLOs FAILED" in run.stdout
    assert modelport(tmp_path / "allowed", *args, "--max-error-rate", "95%").code == 0
    assert modelport(tmp_path / "slo", *args, "--slo", "error_rate<0.95").code == 0


@pytest.mark.parametrize(
    ("target", "extra", "code", "message"),
    [
        ("bad-url", [], 1, "cannot reach http://127.0.0.1:"),
        ("server", ["--model", "nope"], 1, "model 'nope' not found at http://127.0.0.1:"),
        ("server", ["--model", "echo", "--input", "x:float32:-1x4"], 2, "no load was sent: HTTP 400"),
        ("server", ["--model", "failing"], 1, "model 'failing' at http://127.0.0.1:"),
        ("server", ["--model", "echo", "--protocol", "v2-grpc"], 2, "give the gRPC address as host:port"),
        pytest.param(
            "grpc",
            ["--model", "echo", "--protocol", "tfserving-grpc"],
            2,
            "does not serve TF Serving's gRPC API (Method not found!): start the server with --tfserving-grpc",
            marks=pytest.mark.tf,
        ),
        ("server", ["--model", "echo", "--slo", "p99 fast"], 2, "--slo 'p99 fast' does not parse"),
        (
            "server",
            ["--model", "echo", "--metrics-url", "http://127.0.0.1:9/metrics"],
            2,
            "--metrics-url: cannot reach",
        ),
        # an HTTP protocol sent to the gRPC port, and a --metrics-url that answers something else than metrics
        ("http-to-grpc", [], 1, "/v2/models/echo: the answer is not HTTP/1.1 (BadStatusLine)"),
        ("server", ["--model", "echo", "--metrics-url", "{url}/v2/models/echo"], 2, "echo: not Prometheus metrics"),
        ("server", ["--model", "echo", "--metrics-url", "http://{grpc}/metrics"], 2, "is not HTTP/1.1"),
    ],
)
def test_errors_are_clear_and_come_before_any_load(echo_server, tmp_path, target, extra, code, message):
    urls = {
        "bad-url": f"http://127.0.0.1:{free_port()}",
        "grpc": echo_server.grpc,
        "http-to-grpc": f"http://{echo_server.grpc}",
    }
    url = urls.get(target, echo_server.url)
    extra = [arg.format(url=echo_server.url, grpc=echo_server.grpc) for arg in extra]
    run = modelport(tmp_path, "loadtest", url, *(extra or ["--model", "echo"]))
    assert run.code == code, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not list(tmp_path.glob("level*")), "no locust run was started"


def test_own_locustfile_is_run_and_its_errors_reported(echo_server, tmp_path):
    locustfile = tmp_path / "mine.py"
    locustfile.write_text(
        "from locust import FastHttpUser, constant, task\n\n"
        "class Mine(FastHttpUser):\n"
        "    wait_time = constant(0.01)\n\n"
        "    @task\n"
        "    def calls(self):\n"
        "        self.client.post('/v2/models/echo/infer', json={'inputs': [{'name': 'x', 'shape': [1, 3],"
        " 'datatype': 'FP32', 'data': [1, 2, 3]}]})\n"
        "        self.client.get('/v2/models/missing')\n"
    )
    run = modelport(
        tmp_path / "out",
        "loadtest",
        echo_server.url,
        "--model",
        "echo",
        "--locustfile",
        str(locustfile),
        "--users",
        "2",
        "--duration",
        "2s",
        "--slo",
        "error_rate<10%",
    )
    assert run.code == 1, run.stderr
    level = run.report()["levels"][0]
    assert level["failures"] > 10 and 0.3 < level["error_rate"] < 0.7
    assert any("404" in error for error in level["errors"]), level["errors"]
    assert level["server"]["requests_by_outcome"], "the server side is still scraped for --model"


def test_paths_are_relative_to_the_users_directory(echo_server, tmp_path):
    """The default --out, and relative --data, --api-key-file, --out and --locustfile, as a user types them."""
    np.savez(tmp_path / "rows.npz", x=np.arange(12, dtype=np.float32).reshape(4, 3))
    (tmp_path / "key.txt").write_text("any token: this server asks for none\n")
    args = ["loadtest", echo_server.url, "--model", "echo", "--duration", "1s", "--quiet"]
    done = modelport_in(tmp_path, *args, "--data", "rows.npz", "--api-key-file", "key.txt")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "loadtest-out"
    report = json.loads((out / "report.json").read_text())
    assert report["levels"][0]["requests"] > 10 and report["target"]["distinct_requests"] == 4, "the 4 rows of --data"
    assert (out / "level1-users1" / "locust.json").is_file() and (out / "report.html").is_file()
    assert not (out / "level1-users1" / "loadtest-out").exists(), "nothing nested under the level's folder"
    (tmp_path / "mine.py").write_text(
        "from locust import FastHttpUser, constant, task\n\n"
        "class Mine(FastHttpUser):\n"
        "    wait_time = constant(0.01)\n\n"
        "    @task\n"
        "    def ready(self):\n"
        "        self.client.get('/v2/models/echo/ready')\n"
    )
    done = modelport_in(tmp_path, *args, "--locustfile", "mine.py", "--out", "runs/mine")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "runs" / "mine" / "report.json").read_text())
    assert report["levels"][0]["requests"] > 10 and report["levels"][0]["failures"] == 0


def test_own_locustfile_without_a_model_names_the_locustfile(echo_server, tmp_path):
    (tmp_path / "probes.py").write_text(
        "from locust import FastHttpUser, constant, task\n\n"
        "class Probes(FastHttpUser):\n"
        "    wait_time = constant(0.01)\n\n"
        "    @task\n"
        "    def ready(self):\n"
        "        self.client.get('/v2/health/ready')\n"
    )
    done = modelport_in(tmp_path, "loadtest", echo_server.url, "--locustfile", "probes.py", "--duration", "1s")
    assert done.returncode == 0, done.stderr
    assert "load test: locustfile probes.py over v2 at" in done.stdout, done.stdout
    assert done.stderr == "", "no warning from the plots (a series named after no model)"
    assert "<title>Load test: locustfile probes.py over v2" in (tmp_path / "loadtest-out" / "report.html").read_text()


def test_ui_serves_locust_web_ui_and_ctrl_c_writes_the_report(echo_server, tmp_path):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "modelport.cli",
        "loadtest",
        echo_server.url,
        "--model",
        "echo",
        "--ui",
        "--ui-port",
        str(port),
        "--out",
        str(tmp_path),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=60, what="locust's web UI")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "locust" in page.text.lower()
        started = httpx.post(f"http://127.0.0.1:{port}/swarm", data={"user_count": 2, "spawn_rate": 2}, timeout=5)
        assert started.status_code == 200, started.text
        wait_until(lambda: _locust_requests(port) >= 10, timeout=30, what="locust's users sending requests")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in out and (tmp_path / "report.html").exists()
    assert (tmp_path / "report.json").exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _locust_requests(port: int) -> int:
    """Requests locust's users have made so far, from its web UI's stats."""
    stats = httpx.get(f"http://127.0.0.1:{port}/stats/requests", timeout=5).json()["stats"]
    return sum(int(row["num_requests"]) for row in stats if row["name"] == "Aggregated")
