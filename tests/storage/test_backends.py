"""The repository backends: a local folder in place, and the object-store backend over ``file://``, S3, GCS and
Azure Blob (local emulators)."""

from __future__ import annotations

import logging
import sys
import zipfile
from pathlib import Path

import pytest

from modelport.cli import main
from modelport.errors import InvalidArgumentError, ModelNotReadyError
from modelport.manifest import read_manifest
from modelport.storage import LocalRepository, ObjectRepository, RedactSecrets, open_repository, open_store, redact
from tests.serving import fakes
from tests.serving.stores import KINDS, local_store


def test_a_folder_is_read_in_place_and_a_url_goes_through_fsspec(tmp_path):
    assert isinstance(open_repository(tmp_path), LocalRepository)
    assert isinstance(open_repository(str(tmp_path)), LocalRepository)
    store = open_repository(f"file://{tmp_path}", tmp_path / "cache")
    assert isinstance(store, ObjectRepository) and store.location == f"file://{tmp_path}"


def test_credentials_in_the_url_are_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="environment") as info:
        open_store("s3://AKIDEXAMPLE:hunter2secret@bucket/models", tmp_path)
    assert "hunter2secret" not in info.value.message


def test_redact_hides_every_credential_variable_and_the_key_inside_a_connection_string(monkeypatch):
    key = "a2V5LW9mLXRoZS1hY2NvdW50LXRoYXQtbXVzdC1zdGF5LXNlY3JldA=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"AccountName=acct;AccountKey={key};BlobEndpoint=http://h")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "adlfs-account-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    text = redact(f"AccountKey={key} failed; keys adlfs-account-key, aws-secret-value; account acct")
    assert text == "AccountKey=*** failed; keys ***, ***; account acct"


def test_the_log_filter_redacts_credential_headers_that_are_in_no_variable(monkeypatch):
    """botocore's debug log prints each request's headers: an IRSA or instance-role session token is in none of the
    environment's variables, so the header's name is what finds it, in the message and in a traceback."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    token, bearer = "FwoGZXIvYXdzEJr//////////wEaDH+session/token=", "ya29.a0-oauth-access-token"
    headers = {"X-Amz-Security-Token": token.encode(), "Authorization": f"Bearer {bearer}", "Host": "bucket"}
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, "Sending %s", (headers,), None)
    try:
        raise RuntimeError(f"x-amz-security-token: {token} refused with aws-secret-value")
    except RuntimeError:
        failed = logging.LogRecord("s3fs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    for one in (record, failed):
        assert RedactSecrets().filter(one)
        text = logging.Formatter().format(one)
        assert token not in text and bearer not in text and "aws-secret-value" not in text, text
    assert "'Host': 'bucket'" in record.getMessage() and "'X-Amz-Security-Token': b'***'" in record.getMessage()
    assert redact("an authorization header is missing") == "an authorization header is missing"
    broken = logging.LogRecord("lib", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert RedactSecrets().filter(broken), "a record whose arguments do not fit its format raises nothing here"


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


@pytest.mark.parametrize("kind", KINDS)
def test_import_mar_publishes_to_the_store(kind, tmp_path, monkeypatch):
    mar = _onnx_mar(tmp_path / "double.mar")
    with local_store(kind, tmp_path, monkeypatch) as store:
        command = ["import-mar", str(mar), "--repository", store.url(), "--input", "x:float32:-1x3", "--quiet"]
        assert main(command) == 0
        assert main(command) == 0, "a second import is the next version, numbered from what the store holds"
        repository = open_store(store.url(), tmp_path / "cache")
        assert repository.models() == ["double"] and repository.versions("double") == [1, 2]
        copy = repository.fetch("double", 2, repository.stamp("double", 2))
        manifest = read_manifest(copy)
        assert manifest.format == "onnx" and "model.onnx" in manifest.files
        assert "models/.reports/double.json" in store.objects()
        report = store.read("models/.reports/double.json").decode()
        assert store.url() in report and str(tmp_path) not in report


def test_publishing_to_a_file_url_makes_its_folders_as_a_plain_path_does(tmp_path):
    mar = _onnx_mar(tmp_path / "double.mar")
    url = f"file://{tmp_path / 'a' / 'b' / 'models'}"
    assert main(["import-mar", str(mar), "--repository", url, "--input", "x:float32:-1x3", "--quiet"]) == 0
    repository = open_store(url, tmp_path / "cache")
    assert repository.models() == ["double"] and repository.versions("double") == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_each_manifest_reaches_the_store_after_every_file_it_lists(kind, tmp_path, monkeypatch):
    local = tmp_path / "local"
    fakes.seal(fakes.write_model(local, "a"))
    fakes.seal(fakes.write_model(local, "a", version=2))
    fakes.seal(fakes.write_model(local, "b", version=3))
    with local_store(kind, tmp_path, monkeypatch) as store:
        repository = open_store(store.url(), tmp_path / "cache")
        put_file = repository.fs.put_file
        manifests = []

        def put_checking_the_store(source, target, **options):
            if target.endswith("/modelport.json"):
                version = target.removeprefix(f"{store.bucket}/").removesuffix("modelport.json")
                there = {key.removeprefix(version) for key in store.objects(version)}
                assert set(read_manifest(Path(source).parent).files) <= there, f"{target} before its files"
                manifests.append(target)
            return put_file(source, target, **options)

        monkeypatch.setattr(repository.fs, "put_file", put_checking_the_store)
        repository.upload(local)
        assert len(manifests) == 3
        assert repository.versions("a") == [1, 2] and repository.versions("b") == [3]
