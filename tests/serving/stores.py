"""Local object stores for the repository tests: S3 (moto's server mode), GCS (gcp-storage-emulator) and Azure
Blob (Azurite), each on 127.0.0.1 and a free port, with one fresh bucket and a client over fsspec."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from tests.serving.processes import ROOT, free_port, wait_until

SECRET = "s3cr3t-must-never-be-logged"
KINDS = ("s3", "gs", "az")
# Azurite's default account and its key, public in Microsoft's documentation
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"


@dataclass(frozen=True)
class Store:
    """A running local store: its URL scheme, the environment a server reads it with (dummy credentials),
    the credential values that must never reach a log, an fsspec client and one fresh bucket."""

    scheme: str
    env: dict[str, str]
    secrets: tuple[str, ...]
    fs: Any
    bucket: str

    def url(self, prefix: str = "models") -> str:
        return f"{self.scheme}://{self.bucket}/{prefix}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data)

    def put_tree(self, local: Path, prefix: str = "models", manifests: bool = True) -> list[str]:
        """Upload every file under ``local`` to ``prefix``; manifests last, or not at all."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != "modelport.json"]
        ordered += [p for p in files if p.name == "modelport.json"] if manifests else []
        keys = []
        for path in ordered:
            keys.append(f"{prefix}/{path.relative_to(local).as_posix()}")
            self.put(keys[-1], path.read_bytes())
        return keys

    def objects(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, relative to the bucket."""
        return sorted(str(k).split("/", 1)[1] for k in self.fs.find(f"{self.bucket}/{prefix}".rstrip("/")))

    def read(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.bucket}/{key}"))

    def delete_prefix(self, prefix: str) -> None:
        for key in self.objects(prefix):
            self.fs.rm_file(f"{self.bucket}/{key}")

    def delete_bucket(self) -> None:
        self.delete_prefix("")
        self.fs.rmdir(self.bucket)

    def create_bucket(self) -> None:
        self.fs.mkdir(self.bucket)


def _client(protocol: str, **options: Any) -> Any:
    """An fsspec file system that sees the store as it is on every call (no listing or instance cache)."""
    return fsspec.filesystem(protocol, skip_instance_cache=True, use_listings_cache=False, **options)


@contextlib.contextmanager
def _moto() -> Iterator[tuple[dict[str, str], tuple[str, ...], Callable[[], Any]]]:
    """moto's S3 in a thread of this process on port 0, reset and stopped after the block."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        yield env, (SECRET,), lambda: _client("s3", endpoint_url=endpoint, key=env["AWS_ACCESS_KEY_ID"], secret=SECRET)
    finally:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status: it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _process(command: list[str], url: str, log: Path) -> Iterator[None]:
    """An emulator process, until it answers at ``url``; stopped by its PID (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), timeout=60, what=f"{command[0]} up")
        assert process.poll() is None, f"{command[0]} exited: {log.read_text(errors='replace')[-2000:]}"
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def _gcs(workdir: Path) -> Iterator[tuple[dict[str, str], tuple[str, ...], Callable[[], Any]]]:
    """gcp-storage-emulator (in memory) in its own process; gcsfs finds it through STORAGE_EMULATOR_HOST.

    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (read when gcsfs is imported) keeps gcsfs to the JSON API: by default it
    asks the storage-control gRPC API each bucket's layout before a write, which no emulator serves (a minute of
    retries per write, not cached when it fails)."""
    port = str(free_port())
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", port]
    env = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "NO_GCE_CHECK": "true",  # no probe for a GCE metadata server
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    with _process([*command, "--in-memory"], f"{endpoint}/storage/v1/b", workdir / "gcs.log"):
        yield env, (), lambda: _client("gcs", endpoint_url=endpoint, token="anon")


@contextlib.contextmanager
def _azurite(workdir: Path) -> Iterator[tuple[dict[str, str], tuple[str, ...], Callable[[], Any]]]:
    """Azurite's Blob service (in memory) in its own process; adlfs reads its connection string."""
    assert AZURITE.exists(), f"{AZURITE} is missing: `make azurite` (part of `make test`) installs it (npm)"
    port = str(free_port())
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    command = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", port, "--inMemoryPersistence", "--silent"]
    command += ["--skipApiVersionCheck"]  # the pinned SDK speaks a newer API version than Azurite 3.35 knows
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection}
    with _process(command, endpoint, workdir / "azurite.log"):
        yield env, (AZURITE_KEY,), lambda: _client("az", connection_string=connection)


@contextlib.contextmanager
def local_store(kind: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A local ``kind`` store (``s3``, ``gs`` or ``az``) with one fresh bucket; ``workdir`` holds its logs. Its
    environment is set here (for in-process code, undone by ``monkeypatch``) and is what a server is given."""
    starts = {"s3": _moto, "gs": lambda: _gcs(workdir), "az": lambda: _azurite(workdir)}
    with starts[kind]() as (env, secrets, client):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        store = Store(kind, env, secrets, client(), "models-" + uuid.uuid4().hex[:12])
        store.create_bucket()
        yield store


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
