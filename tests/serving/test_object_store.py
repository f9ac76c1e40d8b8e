"""Repositories in object storage: a real ``modelport serve s3://...`` (``gs://``, ``az://``) against local
emulators of each store's API (moto, gcp-storage-emulator, Azurite)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving import fakes
from tests.serving.processes import Served, serving, wait_until
from tests.serving.stores import KINDS, SECRET, Store, local_store, metric

X = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 0]}]}


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Store]:
    (tmp_path / "emulator").mkdir()
    with local_store(request.param, tmp_path / "emulator", monkeypatch) as started:
        yield started


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if answer.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _infer(server: Served, model: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/v2/models/{model}/infer",
        data=json.dumps(X).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["outputs"][0]["data"] == [0, 2, 4, 6, 8, 0]
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _versions(server: Served) -> dict[str, list[str]]:
    """Model name -> its version numbers in the repository index (a model row without version is left out)."""
    status, rows = _get(f"{server.url}/v2/repository/index")
    assert status == 200
    index: dict[str, list[str]] = {}
    for row in rows:
        if row.get("version"):
            index.setdefault(row["name"], []).append(row["version"])
    return {name: sorted(versions, key=int) for name, versions in index.items()}


def _polls(server: Served, result: str = "ok") -> float:
    status, text = _get(f"{server.url}/metrics")
    assert status == 200
    return metric(text.decode(), "modelport_repository_polls_total", result=result)


def _wait_polls(server: Served, count: int, result: str = "ok") -> None:
    """Until the server has finished ``count`` more polls with this result (a full pass, not a timer)."""
    target = _polls(server, result) + count
    wait_until(lambda: _polls(server, result) >= target, timeout=60, what=f"{count} {result} polls")


def _serve(store: Store, tmp_path: Path, *flags: str) -> Any:
    flags = ("--poll-interval-s", "0.1", "--cache-dir", str(tmp_path / "cache"), "--grpc-port", "-1", *flags)
    return serving(store.url(), *flags, env=store.env, log=tmp_path / "server.log")  # type: ignore[arg-type]


def _cached(tmp_path: Path, model: str, version: int) -> set[str]:
    """The manifest stamps of the version's folders in the server's cache (one folder per manifest fetched)."""
    return {p.name for p in (tmp_path / "cache").glob(f"*/{model}/{version}/*") if p.is_dir()}


def _changed(store: Store, version: Path, prefix: str) -> str:
    """Give the version a new artifact and manifest, upload them (manifest last); the new manifest's stamp."""
    fakes.seal(version, artifact=b"the same version, changed")
    store.put_tree(version, prefix=prefix)
    return hashlib.sha256((version / "modelport.json").read_bytes()).hexdigest()[:16]


def _no_secret_in(log: Path, store: Store) -> None:
    text = log.read_text()
    for secret in store.secrets:
        assert secret not in text


def test_serves_from_the_store_and_follows_new_changed_and_removed_versions(store, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m", config={"version_policy": {"all": True}}))
    store.put_tree(local)
    with _serve(store, tmp_path) as server:
        assert _infer(server, "m") == 200
        assert _versions(server) == {"m": ["1"]}
        fakes.seal(fakes.write_model(local, "m", version=2))
        store.put_tree(local / "m" / "2", prefix="models/m/2")
        wait_until(lambda: _get(f"{server.url}/v2/models/m/versions/2/ready")[0] == 200, what="version 2 ready")
        assert _versions(server) == {"m": ["1", "2"]}
        before, after = _cached(tmp_path, "m", 1), _changed(store, local / "m" / "1", "models/m/1")
        wait_until(lambda: _cached(tmp_path, "m", 1) == {after}, what="the changed version 1 fetched, the old one gone")
        assert before != {after}
        store.delete_prefix("models/m/2/")
        wait_until(lambda: _versions(server) == {"m": ["1"]}, what="version 2 removed")
        assert _infer(server, "m") == 200
    _no_secret_in(tmp_path / "server.log", store)


def test_debug_logs_carry_no_credential_from_a_credentials_file(tmp_path, monkeypatch):
    """At --log-level debug botocore logs every request's headers. Credentials from ~/.aws/credentials (like an
    IRSA or instance role's session token) are in no environment variable: the session token must not be logged."""
    token = "IQoJb3JpZ2luX2VjEJr-session-token-must-never-be-logged"
    (tmp_path / "emulator").mkdir()
    with local_store("s3", tmp_path / "emulator", monkeypatch) as store:
        local = tmp_path / "local"
        fakes.seal(fakes.write_model(local, "m"))
        store.put_tree(local)
        credentials = tmp_path / "aws-credentials"
        credentials.write_text(
            f"[default]\naws_access_key_id = {store.env['AWS_ACCESS_KEY_ID']}\naws_secret_access_key = {SECRET}\n"
            f"aws_session_token = {token}\n"
        )
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        env = {"AWS_ENDPOINT_URL": store.env["AWS_ENDPOINT_URL"], "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
        flags = ("--log-level", "debug", "--log-json", "--cache-dir", str(tmp_path / "cache"), "--grpc-port", "-1")
        with serving(store.url(), *flags, env=env, log=tmp_path / "server.log") as server:  # type: ignore[arg-type]
            assert _infer(server, "m") == 200
    text = (tmp_path / "server.log").read_text()
    assert "X-Amz-Security-Token" in text, "botocore logged no request headers: the test proves nothing"
    assert token not in text and SECRET not in text


def test_a_half_uploaded_version_is_invisible_until_its_manifest_lands(store, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m", config={"version_policy": {"all": True}}))
    store.put_tree(local)
    fakes.seal(fakes.write_model(local, "m", version=2), artifact=b"version two's bytes")
    with _serve(store, tmp_path) as server:
        for name in ("golden.npz", "model.onnx"):  # the upload, one object at a time, the manifest last
            data = (local / "m" / "2" / name).read_bytes()
            store.put(f"models/m/2/{name}", data)
            _wait_polls(server, 2)
            assert _versions(server) == {"m": ["1"]}, f"after {name}: no manifest yet, so no version 2"
        manifest = (local / "m" / "2" / "modelport.json").read_bytes()
        store.put("models/m/2/modelport.json", manifest)
        wait_until(lambda: _get(f"{server.url}/v2/models/m/versions/2/ready")[0] == 200, what="version 2 ready")
        assert _versions(server) == {"m": ["1", "2"]}


def test_a_deleted_bucket_keeps_serving_and_its_return_is_picked_up(store, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m"))
    store.put_tree(local)
    with _serve(store, tmp_path) as server:
        store.delete_bucket()
        _wait_polls(server, 3, "unreachable")
        assert _infer(server, "m") == 200, "what is loaded serves on while the store is gone"
        assert _versions(server) == {"m": ["1"]}
        store.create_bucket()
        fakes.seal(fakes.write_model(local, "late"))
        store.put_tree(local)
        wait_until(lambda: _versions(server) == {"late": ["1"], "m": ["1"]}, what="the restored bucket's models")
        assert _infer(server, "late") == 200 and _infer(server, "m") == 200
    log = (tmp_path / "server.log").read_text()
    assert "serving what is loaded" in log and "reachable again" in log
    _no_secret_in(tmp_path / "server.log", store)


def test_a_bucket_deleted_mid_poll_is_a_store_to_wait_for_not_a_model_without_versions(store, tmp_path):
    # the race the test above can lose: the poll listed the repository, then the bucket went; listing a model's
    # versions found nothing, and the server unloaded what it was serving (404s while the store was gone)
    from modelport.errors import UnavailableError
    from modelport.storage.objects import ObjectRepository

    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m"))
    store.put_tree(local)
    repository = ObjectRepository(store.url(), tmp_path / "cache")
    assert repository.models() == ["m"] and repository.versions("m") == [1]
    store.delete_bucket()
    with pytest.raises(UnavailableError, match="bucket or folder does not exist"):
        repository.versions("m")
    store.create_bucket()
    assert repository.versions("m") == [], "a model folder emptied in a bucket that exists has no versions"


def test_a_corrupt_object_fails_its_version_naming_the_file(store, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m"))
    fakes.seal(fakes.write_model(local, "ok"))
    store.put_tree(local)
    store.put("models/m/1/model.onnx", b"fake model bytez")
    with _serve(store, tmp_path) as server:
        status, body = _get(f"{server.url}/v2/models/m/versions/1/ready")
        assert status == 503 and body["ready"] is False
        assert "model.onnx" in body["reason"] and "sha256" in body["reason"], body
        assert _infer(server, "ok") == 200
