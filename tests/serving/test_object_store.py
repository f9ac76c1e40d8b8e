"""Repositories in object storage: a real ``modelport serve s3://...`` against a local S3 API (moto)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving import fakes
from tests.serving.processes import Served, serving, wait_until
from tests.serving.s3 import S3, SECRET, local_s3, metric

X = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 0]}]}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    with local_s3() as store:
        for name, value in store.env.items():
            monkeypatch.setenv(name, value)  # the served subprocess and in-process clients alike
        yield store


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


def _serve(s3: S3, tmp_path: Path, *flags: str) -> Any:
    flags = ("--poll-interval-s", "0.1", "--cache-dir", str(tmp_path / "cache"), "--grpc-port", "-1", *flags)
    return serving(s3.url(), *flags, env=s3.env, log=tmp_path / "server.log")  # type: ignore[arg-type]


def test_serves_from_s3_and_follows_new_and_removed_versions(s3, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m", config={"version_policy": {"all": True}}))
    s3.put_tree(local)
    with _serve(s3, tmp_path) as server:
        assert _infer(server, "m") == 200
        assert _versions(server) == {"m": ["1"]}
        fakes.seal(fakes.write_model(local, "m", version=2))
        s3.put_tree(local / "m" / "2", prefix="models/m/2")
        wait_until(lambda: _get(f"{server.url}/v2/models/m/versions/2/ready")[0] == 200, what="version 2 ready")
        assert _versions(server) == {"m": ["1", "2"]}
        s3.delete_prefix("models/m/2/")
        wait_until(lambda: _versions(server) == {"m": ["1"]}, what="version 2 removed")
        assert _infer(server, "m") == 200
    assert SECRET not in (tmp_path / "server.log").read_text()


def test_a_half_uploaded_version_is_invisible_until_its_manifest_lands(s3, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m", config={"version_policy": {"all": True}}))
    s3.put_tree(local)
    fakes.seal(fakes.write_model(local, "m", version=2), artifact=b"version two's bytes")
    with _serve(s3, tmp_path) as server:
        for name in ("golden.npz", "model.onnx"):  # the upload, one object at a time, the manifest last
            data = (local / "m" / "2" / name).read_bytes()
            s3.client.put_object(Bucket=s3.bucket, Key=f"models/m/2/{name}", Body=data)
            _wait_polls(server, 2)
            assert _versions(server) == {"m": ["1"]}, f"after {name}: no manifest yet, so no version 2"
        manifest = (local / "m" / "2" / "modelport.json").read_bytes()
        s3.client.put_object(Bucket=s3.bucket, Key="models/m/2/modelport.json", Body=manifest)
        wait_until(lambda: _get(f"{server.url}/v2/models/m/versions/2/ready")[0] == 200, what="version 2 ready")
        assert _versions(server) == {"m": ["1", "2"]}


def test_a_deleted_bucket_keeps_serving_and_its_return_is_picked_up(s3, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m"))
    s3.put_tree(local)
    with _serve(s3, tmp_path) as server:
        s3.delete_bucket()
        _wait_polls(server, 3, "unreachable")
        assert _infer(server, "m") == 200, "what is loaded serves on while the store is gone"
        assert _versions(server) == {"m": ["1"]}
        s3.client.create_bucket(Bucket=s3.bucket)
        fakes.seal(fakes.write_model(local, "late"))
        s3.put_tree(local)
        wait_until(lambda: _versions(server) == {"late": ["1"], "m": ["1"]}, what="the restored bucket's models")
        assert _infer(server, "late") == 200 and _infer(server, "m") == 200
    log = (tmp_path / "server.log").read_text()
    assert "serving what is loaded" in log and "reachable again" in log
    assert SECRET not in log


def test_a_corrupt_object_fails_its_version_naming_the_file(s3, tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "m"))
    fakes.seal(fakes.write_model(local, "ok"))
    s3.put_tree(local)
    s3.client.put_object(Bucket=s3.bucket, Key="models/m/1/model.onnx", Body=b"fake model bytez")
    with _serve(s3, tmp_path) as server:
        status, body = _get(f"{server.url}/v2/models/m/versions/1/ready")
        assert status == 503 and body["ready"] is False
        assert "model.onnx" in body["reason"] and "sha256" in body["reason"], body
        assert _infer(server, "ok") == 200
