"""A server that wants a token: loadtest sends --api-key over HTTP and gRPC, and says so when it is missing."""

from __future__ import annotations

from tests.loadtest.conftest import modelport
from tests.serving import fakes
from tests.serving.processes import serving


def test_api_key_is_sent_over_http_and_grpc(tmp_path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    with serving(repo, "--api-key", "s3cret", "--log-level", "warning", timeout=60) as server:
        denied = modelport(tmp_path / "denied", "loadtest", server.url, "--model", "echo")
        assert denied.code == 2 and "HTTP 401" in denied.stderr, denied.stderr
        assert not list((tmp_path / "denied").glob("level*")), "no load without a token"
        metrics = ["--metrics-url", f"{server.url}/metrics"]
        for protocol, address in (("v2", [server.url]), ("v2-grpc", [server.grpc, *metrics])):
            run = modelport(
                tmp_path / protocol,
                "loadtest",
                *address,
                "--model",
                "echo",
                "--protocol",
                protocol,
                "--api-key-file",
                str(key),
                "--duration",
                "1s",
            )
            assert run.code == 0, run.stderr
            level = run.report()["levels"][0]
            assert level["requests"] > 20 and level["failures"] == 0, (protocol, level["errors"])
    assert "s3cret" not in (tmp_path / "v2" / "plan.json").read_text(), "the token stays off the disk"
