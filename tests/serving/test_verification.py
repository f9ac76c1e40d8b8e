"""Every artifact file is checked against the sha256 its manifest records before a version loads."""

from __future__ import annotations

import httpx
import pytest

from modelport.errors import ModelNotReadyError
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.storage import LocalRepository
from tests.serving import fakes
from tests.serving.test_rest import _infer_body


def _flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


async def test_a_corrupt_artifact_fails_its_version_and_names_the_file(tmp_path):
    repo = tmp_path / "repo"
    fakes.seal(fakes.write_model(repo, "m", config={"version_policy": {"all": True}}))
    fakes.seal(fakes.write_model(repo, "m", version=2))
    fakes.seal(fakes.write_model(repo, "other"))
    _flip_one_byte(repo / "m" / "2" / "model.onnx")
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answer = await http.get("/v2/models/m/versions/2/ready")
            assert answer.status_code == 503
            body = answer.json()
            assert body["ready"] is False
            assert "model.onnx" in body["reason"] and "sha256" in body["reason"], body
            assert (await http.get("/v2/models/m/versions/1/ready")).status_code == 200
            assert (await http.post("/v2/models/other/infer", json=_infer_body())).status_code == 200
            assert (await http.post("/v2/models/m/infer", json=_infer_body())).status_code == 200, (
                "the default is the highest READY version"
            )
    finally:
        await plane.close()


async def test_a_missing_artifact_fails_its_version_and_names_the_file(tmp_path):
    repo = tmp_path / "repo"
    fakes.seal(fakes.write_model(repo, "m"))
    (repo / "m" / "1" / "golden.npz").unlink()
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0))
    await plane.start()
    try:
        ready, reason = plane.model_ready("m", "1")
        assert not ready
        assert "golden.npz" in reason and "missing" in reason
    finally:
        await plane.close()


def test_files_are_hashed_once_per_manifest(tmp_path):
    repo = tmp_path / "repo"
    directory = fakes.seal(fakes.write_model(repo, "m"))
    store = LocalRepository(repo)
    stamp = store.stamp("m", 1)
    assert store.fetch("m", 1, stamp) == directory
    _flip_one_byte(directory / "model.onnx")
    assert store.fetch("m", 1, stamp) == directory, "the same manifest again: verified already, not hashed again"
    (directory / "modelport.json").touch()
    with pytest.raises(ModelNotReadyError, match=r"model\.onnx"):
        store.fetch("m", 1, store.stamp("m", 1))
