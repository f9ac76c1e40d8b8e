"""Certificates for TLS tests, made with the openssl CLI (no extra Python package): a CA, a server certificate for
localhost / 127.0.0.1, client certificates (good, from another CA, expired)."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

_REQ_CONFIG = "[req]\ndistinguished_name = dn\n[dn]\n"
_CA_CONFIG = """[ca]
default_ca = signer
[signer]
database = {folder}/index.txt
new_certs_dir = {folder}
serial = {folder}/serial
default_md = sha256
policy = anything
unique_subject = no
x509_extensions = client
[anything]
commonName = supplied
[client]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
"""


@dataclass(frozen=True)
class Pair:
    """A certificate (PEM) and its private key."""

    cert: Path
    key: Path


def _openssl(folder: Path, *args: str) -> None:
    config = folder / "req.cnf"
    config.write_text(_REQ_CONFIG)
    subprocess.run(["openssl", *args], check=True, capture_output=True, env={**os.environ, "OPENSSL_CONF": str(config)})


def authority(folder: Path, name: str) -> Pair:
    """A self-signed CA certificate valid for a day."""
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        folder,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        *("-keyout", str(pair.key), "-out", str(pair.cert)),
    )
    return pair


def _request(folder: Path, name: str) -> tuple[Path, Path]:
    csr, key = folder / f"{name}.csr", folder / f"{name}.key"
    _openssl(
        folder,
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    return csr, key


def issued(folder: Path, ca: Pair, name: str, server: bool = False) -> Pair:
    """A certificate signed by ``ca`` valid for a day: for the server (localhost, 127.0.0.1) or a client."""
    csr, key = _request(folder, name)
    extensions = folder / f"{name}.ext"
    usage = "serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1" if server else "clientAuth"
    extensions.write_text(f"basicConstraints = CA:FALSE\nextendedKeyUsage = {usage}\n")
    cert = folder / f"{name}.pem"
    _openssl(
        folder,
        *(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca.cert),
            "-CAkey",
            str(ca.key),
            "-set_serial",
            str(secrets.randbits(63)),
        ),
        *("-days", "1", "-extfile", str(extensions), "-out", str(cert)),
    )
    return Pair(cert, key)


def expired(folder: Path, ca: Pair, name: str) -> Pair:
    """A client certificate signed by ``ca`` that expired in 2020 (``openssl ca`` can set past dates)."""
    csr, key = _request(folder, name)
    signer = folder / f"{name}-signer"
    signer.mkdir()
    (signer / "index.txt").write_text("")
    (signer / "serial").write_text("03\n")
    config = signer / "ca.cnf"
    config.write_text(_CA_CONFIG.format(folder=signer))
    cert = folder / f"{name}.pem"
    _openssl(
        folder,
        *("ca", "-batch", "-config", str(config), "-cert", str(ca.cert), "-keyfile", str(ca.key), "-notext"),
        *("-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-in", str(csr), "-out", str(cert)),
    )
    return Pair(cert, key)


def encrypted_key(folder: Path, name: str) -> Path:
    """A private key protected by a passphrase (PKCS#8 ``ENCRYPTED PRIVATE KEY``)."""
    key = folder / f"{name}.key"
    _openssl(folder, "genpkey", "-algorithm", "RSA", "-aes256", "-pass", "pass:secret", "-out", str(key))
    return key
