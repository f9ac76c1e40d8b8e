"""``modelport import-mar``: TorchServe archives (TorchScript or ONNX inside) become repository models."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelport.cli import main
from modelport.golden import load_golden
from modelport.manifest import read_manifest

SPEC = "image:float32:-1x1x8x8"


def _mar(path: Path, files: dict[str, bytes], model: dict[str, Any] | None = None) -> Path:
    manifest = {"model": {"modelName": "digits", "modelVersion": "1.0", "handler": "h.py", **(model or {})}}
    with zipfile.ZipFile(path, "w") as archive:
        if model is not None:
            archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("files", "model", "message"),
    [
        ({}, {"serializedFile": "model.pt"}, "is not in the archive"),
        ({"weights.pt": b"PK..", "model.py": b""}, {"serializedFile": "weights.pt", "modelFile": "model.py"}, "eager"),
        ({"model.bin": b"\x00\x01"}, {"serializedFile": "model.bin"}, "neither TorchScript nor ONNX"),
        ({"model.pt": b"PK"}, {}, "names no serializedFile"),
        ({"../evil.pt": b"PK"}, {"serializedFile": "../evil.pt"}, "escapes the archive"),
        ({"x.txt": b""}, None, "MANIFEST.json is missing"),
    ],
)
def test_bad_archives_are_refused(capsys, tmp_path, files, model, message):
    mar = _mar(tmp_path / "m.mar", files, model)
    code = main(["import-mar", str(mar), "--repository", str(tmp_path / "repo"), "--input", SPEC])
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_not_an_archive(capsys, tmp_path):
    (tmp_path / "x.mar").write_bytes(b"hello")
    assert main(["import-mar", str(tmp_path / "x.mar"), "--repository", str(tmp_path / "r")]) == 1
    assert "neither a .mar" in capsys.readouterr().err
    assert main(["import-mar", str(tmp_path / "missing.mar"), "--repository", str(tmp_path / "r")]) == 1
    assert "no such model archive" in capsys.readouterr().err


def test_a_missing_model_store_or_archive_with_ts_config_is_a_one_line_error(capsys, tmp_path):
    mar = _mar(tmp_path / "m.mar", {"model.pt": b"PK"}, {"serializedFile": "model.pt"})
    config = tmp_path / "config.properties"
    config.write_text(f"model_store={tmp_path / 'missing'}\n")
    assert main(["import-mar", "--ts-config", str(config), "--repository", str(tmp_path / "r")]) == 1
    assert "missing: no such model store" in capsys.readouterr().err
    assert main(["import-mar", str(mar), "--ts-config", str(config), "--repository", str(tmp_path / "r")]) == 2
    assert "m.mar is one archive, not a model store" in capsys.readouterr().err
    (tmp_path / "store").mkdir()
    snapshot = {"models": {"m": {"1.0": {"marName": "m_v9.mar", "defaultVersion": True}}}}
    config.write_text(f"model_store={tmp_path / 'store'}\nmodel_snapshot={json.dumps(snapshot)}\n")
    assert main(["import-mar", "--ts-config", str(config), "--repository", str(tmp_path / "r")]) == 1
    assert "error: the snapshot's m 1.0 marName m_v9.mar: " in capsys.readouterr().err  # was "load_models m_v9.mar"
    (tmp_path / "store" / "w.war").write_bytes(b"PK")
    config.write_text(f"model_store={tmp_path / 'store'}\nload_models=w.war\n")
    assert main(["import-mar", "--ts-config", str(config), "--repository", str(tmp_path / "r")]) == 2
    assert "load_models w.war: a workflow archive (.war) is not imported" in capsys.readouterr().err


@pytest.mark.torch
def test_an_archive_model_that_fails_to_load_is_named_in_its_archive(capsys, tmp_path):
    """The error named the temporary file the model was extracted to (/tmp/modelport-mar-xxxx/model.pt), gone."""
    mar = _mar(tmp_path / "m.mar", {"weights.pt": b"PK not torchscript"}, {"serializedFile": "weights.pt"})
    assert main(["import-mar", str(mar), "--repository", str(tmp_path / "r"), "--input", SPEC]) == 1
    err = capsys.readouterr().err
    assert f"cannot load {mar} (weights.pt) as TorchScript" in err and "modelport-mar-" not in err


def test_remote_must_be_a_url(capsys, tmp_path):
    mar = _mar(tmp_path / "m.mar", {"model.pt": b"PK"}, {"serializedFile": "model.pt"})
    assert main(["import-mar", str(mar), "--repository", str(tmp_path / "r"), "--remote", "localhost:8080"]) == 2
    assert "inference URL" in capsys.readouterr().err


@pytest.mark.torch
def test_torchscript_archive_imports_with_golden_vectors(tmp_path, digits_repo):
    served = digits_repo.root / "digits-torchscript" / "1"
    mar = _mar(tmp_path / "d.mar", {"model.pt": (served / "model.pt").read_bytes()}, {"serializedFile": "model.pt"})
    repo = tmp_path / "repo"
    assert main(["import-mar", str(mar), "--repository", str(repo), "--input", SPEC, "--quiet"]) == 0
    manifest = read_manifest(repo / "digits" / "1")
    assert manifest.format == "torchscript"
    assert manifest.parity is not None
    assert manifest.parity.passed
    assert [s.describe() for s in manifest.inputs] == ["image:float32:-1x1x8x8"]
    golden = load_golden(repo / "digits" / "1" / "golden.npz")
    reference = load_golden(served / "golden.npz")
    assert golden[0].inputs["image"].shape == reference[0].inputs["image"].shape
    config = yaml.safe_load((repo / "digits" / "config.yaml").read_text())
    # no remote (the model runs locally); the archive's version names it, as TorchServe's /predictions/digits/1.0
    assert config == {"version_labels": {"1.0": 1}}


@pytest.mark.torch
def test_onnx_archive_in_tgz_format_imports_and_records_remote(tmp_path, digits_repo):
    onnx = (digits_repo.root / "digits-onnx" / "1" / "model.onnx").read_bytes()
    manifest = {"model": {"modelName": "digits", "modelVersion": "2.0", "serializedFile": "model.onnx"}}
    path = tmp_path / "digits.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {
            "digits/MAR-INF/MANIFEST.json": json.dumps(manifest).encode(),
            "digits/model.onnx": onnx,
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    repo = tmp_path / "repo"
    command = ["import-mar", str(path), "--repository", str(repo), "--name", "onnx-digits", "--quiet"]
    assert main([*command, "--remote", "http://127.0.0.1:8080/"]) == 0
    version = repo / "onnx-digits" / "1"
    assert read_manifest(version).format == "onnx"
    config = yaml.safe_load((repo / "onnx-digits" / "config.yaml").read_text())
    assert config == {
        "version_labels": {"2.0": 1},
        "runtime": "torchserve",
        "remote": {"address": "http://127.0.0.1:8080", "model": "digits"},
    }
    case = load_golden(version / "golden.npz")[0]
    assert np.isfinite(case.outputs[read_manifest(version).outputs[0].name]).all()


@pytest.mark.torch
def test_a_model_store_of_torchscript_archives_imports_with_their_config_properties(tmp_path, digits_repo):
    """Two versions of a TorchScript archive in a store (no custom handler: exported to tensors): both served, the
    first the default; ``batchSize`` from ``models`` is the model's ``max_batch_size``, its manifest keeps 64."""
    model = (digits_repo.root / "digits-torchscript" / "1" / "model.pt").read_bytes()
    store = tmp_path / "store"
    store.mkdir()
    for version in ("1.0", "2.0"):
        _mar(
            store / f"d_v{version[0]}.mar", {"model.pt": model}, {"serializedFile": "model.pt", "modelVersion": version}
        )
    models = {"digits": {"1.0": {"batchSize": 4, "maxBatchDelay": 20, "responseTimeout": 10}}}
    config = tmp_path / "config.properties"
    config.write_text(f"load_models=d_v1.mar,d_v2.mar\nmodels={json.dumps(models)}\n")
    command = ["import-mar", str(store), "--ts-config", str(config), "--repository", str(tmp_path / "repo")]
    assert main([*command, "--input", SPEC, "--quiet"]) == 0
    assert [read_manifest(tmp_path / "repo" / "digits" / v).max_batch_size for v in ("1", "2")] == [64, 64]
    assert yaml.safe_load((tmp_path / "repo" / "digits" / "config.yaml").read_text()) == {
        "version_labels": {"1.0": 1, "2.0": 2},
        "version_policy": {"specific": [1, 2]},
        "default_version": 1,
        "timeout_ms": 10_000.0,
        "max_batch_size": 4,
        "max_queue_delay_ms": 20.0,
    }
