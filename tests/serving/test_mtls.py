"""``--tls-client-ca``: both ports require a client certificate signed by that CA (mutual TLS). A client with no
certificate, one from another CA or an expired one is refused during the handshake; the right one is served."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydantic
import pytest
import tritonclient.grpc as triton

from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.certificates import Pair, authority, encrypted_key, expired, issued
from tests.serving.processes import serving
from tests.user_cli import run_modelport

BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@dataclass(frozen=True)
class Setup:
    """A running mTLS server and the client certificates to try against it."""

    url: str
    grpc: str
    ca: Path
    clients: dict[str, Pair | None]  # "good", and the refused ones: "none", "other-ca", "expired"


@pytest.fixture(scope="module")
def mtls(tmp_path_factory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("mtls")
    ca, other = authority(folder, "ca"), authority(folder, "other-ca")
    server, good = issued(folder, ca, "server", server=True), issued(folder, ca, "client")
    clients = {
        "good": good,
        "none": None,
        "other-ca": issued(folder, other, "stranger"),
        "expired": expired(folder, ca, "old"),
    }
    repo = folder / "repo"
    fakes.write_model(repo, "echo")
    flags = ["--tls-certfile", str(server.cert), "--tls-keyfile", str(server.key), "--tls-client-ca", str(ca.cert)]
    with serving(repo, *flags, log=folder / "server.log", tls_ca=ca.cert, tls_client=(good.cert, good.key)) as served:
        yield Setup(served.url, served.grpc, ca.cert, clients)


def _http(setup: Setup, client: Pair | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(setup.ca))
    if client:
        context.load_cert_chain(client.cert, client.key)
    return httpx.Client(base_url=setup.url, verify=context, timeout=10)


def _grpc(setup: Setup, client: Pair | None) -> triton.InferenceServerClient:
    chain = {"private_key": str(client.key), "certificate_chain": str(client.cert)} if client else {}
    return triton.InferenceServerClient(url=setup.grpc, ssl=True, root_certificates=str(setup.ca), **chain)


def _inputs() -> list[triton.InferInput]:
    return [triton.InferInput("x", [1, 3], "FP32").set_data_from_numpy(np.array([[1, 2, 3]], np.float32))]


def test_the_right_client_certificate_is_served_on_both_ports(mtls):
    with _http(mtls, mtls.clients["good"]) as http:
        answer = http.post("/v2/models/echo/infer", json=BODY)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2, 4, 6]
    client = _grpc(mtls, mtls.clients["good"])
    assert client.infer("echo", _inputs()).as_numpy("y").tolist() == [[2, 4, 6]]
    client.close()


@pytest.mark.parametrize("which", ["none", "other-ca", "expired"])
def test_http_refuses_a_missing_foreign_or_expired_certificate(mtls, which):
    with _http(mtls, mtls.clients[which]) as http, pytest.raises(httpx.TransportError):
        http.get("/v2/health/ready")  # even an open probe: the handshake itself fails


@pytest.mark.parametrize("which", ["none", "other-ca", "expired"])
def test_grpc_refuses_a_missing_foreign_or_expired_certificate(mtls, which):
    client = _grpc(mtls, mtls.clients[which])
    for call in (client.is_server_live, lambda: client.infer("echo", _inputs())):
        with pytest.raises(triton.InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.UNAVAILABLE", info.value.message()
    client.close()


def test_a_client_ca_needs_the_servers_own_certificate():
    with pytest.raises(pydantic.ValidationError, match="--tls-client-ca needs --tls-certfile"):
        ServerSettings(repository=Path("."), tls_client_ca="ca.pem")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("another key", "the private key is not the certificate's (key values mismatch)"),
        ("encrypted key", "the key is encrypted (a passphrase)"),
        ("certificate as key", "--tls-keyfile server.pem: holds no PEM private key"),
        ("key as client CA", "--tls-client-ca client.key: holds no PEM certificate"),
        ("missing key", "--tls-keyfile missing.key: cannot read: No such file or directory"),
    ],
)
def test_a_bad_certificate_key_or_client_ca_is_one_clear_error_at_start(tmp_path, case, expected):
    """Each used to be a traceback from uvicorn's SSL setup (an encrypted key: OpenSSL asking for a passphrase)."""
    ca = authority(tmp_path, "ca")
    server, client = issued(tmp_path, ca, "server", server=True), issued(tmp_path, ca, "client")
    files = {
        "another key": ("server.pem", issued(tmp_path, ca, "other", server=True).key.name, None),
        "encrypted key": ("server.pem", encrypted_key(tmp_path, "locked").name, None),
        "certificate as key": ("server.pem", "server.pem", None),
        "key as client CA": ("server.pem", "server.key", client.key.name),
        "missing key": ("server.pem", "missing.key", None),
    }
    cert, key, client_ca = files[case]
    assert server.cert.name == "server.pem" and server.key.name == "server.key"
    fakes.write_model(tmp_path / "repo", "echo")
    flags = ["--http-port", "0", "--grpc-port", "0", "--tls-certfile", cert, "--tls-keyfile", key]
    flags += ["--tls-client-ca", client_ca] if client_ca else []
    result = run_modelport("serve", "repo", *flags, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("modelport serve: error: ")
    assert expected in result.stderr
