"""The repository backends: a local folder in place, and the object-store backend over ``file://`` and S3."""

from __future__ import annotations

import zipfile

import pytest

from modelport.cli import main
from modelport.errors import InvalidArgumentError, ModelNotReadyError
from modelport.manifest import read_manifest
from modelport.storage import LocalRepository, ObjectRepository, open_repository, open_store
from tests.serving import fakes
from tests.serving.s3 import local_s3


def test_a_folder_is_read_in_place_and_a_url_goes_through_fsspec(tmp_path):
    assert isinstance(open_repository(tmp_path), LocalRepository)
    assert isinstance(open_repository(str(tmp_path)), LocalRepository)
    store = open_repository(f"file://{tmp_path}", tmp_path / "cache")
    assert isinstance(store, ObjectRepository) and store.location == f"file://{tmp_path}"


def test_credentials_in_the_url_are_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="environment") as info:
        open_store("s3://AKIDEXAMPLE:hunter2secret@bucket/models", tmp_path)
    assert "hunter2secret" not in info.value.message


def test_fetch_copies_a_version_into_the_cache_and_verifies_it(tmp_path):
    repo = tmp_path / "repo"
    fakes.seal(fakes.write_model(repo, "m"))
    fakes.write_model(repo, "m", version=2).joinpath("modelport.json").unlink()  # no manifest: not a version
    store = open_store(f"file://{repo}", tmp_path / "cache")
    assert store.models() == ["m"] and store.versions("m") == [1]
    assert (store.config_dir("m") / "config.yaml").read_text() == (repo / "m" / "config.yaml").read_text()
    copy = store.fetch("m", 1, store.stamp("m", 1))
    assert copy.is_relative_to(tmp_path / "cache")
    assert read_manifest(copy).files.keys() == {"golden.npz", "model.onnx"}
    store.release(copy)
    assert not copy.exists()
    data = bytearray((repo / "m" / "1" / "model.onnx").read_bytes())
    data[0] ^= 1
    (repo / "m" / "1" / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelNotReadyError, match=r"model\.onnx"):
        store.fetch("m", 1, store.stamp("m", 1))


def test_upload_puts_every_manifest_last(tmp_path):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "a"))
    fakes.seal(fakes.write_model(local, "b", version=3))
    (tmp_path / "store").mkdir()
    store = open_store(f"file://{tmp_path / 'store'}", tmp_path / "cache")
    order = store.upload(local)
    manifests = [i for i, key in enumerate(order) if key.endswith("modelport.json")]
    assert len(manifests) == 2 and manifests == list(range(len(order) - 2, len(order)))
    assert store.versions("a") == [1] and store.versions("b") == [3]


def _onnx_mar(path):
    """A TorchServe archive holding a one-node ONNX model: y = 2 * x."""
    from onnx import TensorProto, helper

    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    manifest = '{"model": {"modelName": "double", "serializedFile": "model.onnx", "handler": "h.py"}}'
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", manifest)
        archive.writestr("model.onnx", model.SerializeToString())
    return path


def test_import_mar_publishes_to_s3(tmp_path, monkeypatch):
    mar = _onnx_mar(tmp_path / "double.mar")
    with local_s3() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        command = ["import-mar", str(mar), "--repository", s3.url(), "--input", "x:float32:-1x3", "--quiet"]
        assert main(command) == 0
        assert main(command) == 0, "a second import is the next version, numbered from what the store holds"
        store = open_store(s3.url(), tmp_path / "cache")
        assert store.models() == ["double"] and store.versions("double") == [1, 2]
        copy = store.fetch("double", 2, store.stamp("double", 2))
        manifest = read_manifest(copy)
        assert manifest.format == "onnx" and "model.onnx" in manifest.files
        keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
        assert "models/.reports/double.json" in keys
        report = s3.client.get_object(Bucket=s3.bucket, Key="models/.reports/double.json")["Body"].read().decode()
        assert s3.url() in report and str(tmp_path) not in report
