"""What ``import-mar`` takes from a handler archive's model config, requirements file and archive format.

The archives of ``tests/serving/handler_archives.py`` (the ``ctx`` archive has a ``model-config.yaml``, extra
files in a subfolder and a requirements file), imported and served in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from modelport.cli import main
from modelport.errors import SourceError
from modelport.manifest import read_manifest
from modelport.runtimes.base import RuntimeOptions
from modelport.runtimes.handler import HandlerRuntime
from modelport.runtimes.handler_request import Field, TorchServeRequest, decode_reply, encode_request
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.torchserve_process import archive
from tests.serving.handler_archives import MODEL_CONFIG, build_archives

pytestmark = [pytest.mark.torch, pytest.mark.torchserve]


def _import(mar: Path, repo: Path, capsys: pytest.CaptureFixture[str] | None = None) -> str:
    assert main(["import-mar", str(mar), "--repository", str(repo)]) == 0
    return capsys.readouterr().out if capsys is not None else ""


def test_the_model_config_becomes_the_models_serving_config(tmp_path: Path) -> None:
    """batchSize 2 -> max_batch_size, maxBatchDelay 50 ms, responseTimeout 30 s -> timeout_ms, maxWorkers
    max_workers; minWorkers 1 leaves the instances alone; a minWorkers above 1 becomes instances."""
    ctx = build_archives(tmp_path)[0]
    _import(ctx, tmp_path / "repo")
    assert read_manifest(tmp_path / "repo" / "ctx" / "1").max_batch_size == 2
    config = yaml.safe_load((tmp_path / "repo" / "ctx" / "config.yaml").read_text())
    expected = {"version_labels": {"1.0": 1}, "max_queue_delay_ms": 50.0, "timeout_ms": 30000.0, "max_workers": 1}
    assert config == expected, "maxWorkers: what TorchServe's describe shows"
    again = build_archives(tmp_path / "again", MODEL_CONFIG.replace("minWorkers: 1", "minWorkers: 3"))[0]
    _import(again, tmp_path / "repo3")
    assert yaml.safe_load((tmp_path / "repo3" / "ctx" / "config.yaml").read_text())["instances"] == 3


def test_a_second_archive_version_of_a_model_is_served_beside_the_first(tmp_path: Path) -> None:
    """TorchServe serves every version registered, the first by default: ``import-mar`` of m 1.0, then of m 2.0,
    lists both in ``version_policy`` (modelport's default policy would serve only the latest) and keeps 1.0 the
    default; a third joins them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "h.py").write_text("def handle(data, context):\n    return None if data is None else ['v' for _ in data]\n")
    (src / "w.bin").write_text("x")
    repo = tmp_path / "repo"
    for version in ("1.0", "2.0"):
        _import(archive(src / "w.bin", src / "h.py", "m", tmp_path / version, version=version), repo)
    config = yaml.safe_load((repo / "m" / "config.yaml").read_text())
    assert config == {
        "version_labels": {"1.0": 1, "2.0": 2},
        "version_policy": {"specific": [1, 2]},
        "default_version": 1,
        "timeout_ms": 120_000.0,  # TorchServe's default responseTimeout (the server's would be 30 s)
        "max_queue_delay_ms": 100.0,  # TorchServe's default maxBatchDelay, which its describe shows
    }
    _import(archive(src / "w.bin", src / "h.py", "m", tmp_path / "3", version="3.0"), repo)
    config = yaml.safe_load((repo / "m" / "config.yaml").read_text())
    assert (config["version_policy"], config["default_version"]) == ({"specific": [1, 2, 3]}, 1)


def test_a_requirements_file_is_reported_as_not_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, basic = build_archives(tmp_path)[:2]
    out = _import(ctx, tmp_path / "repo", capsys)
    assert "requirements file requirements.txt is not installed" in out
    assert f"pip install -r {tmp_path / 'repo' / 'ctx' / '1' / 'requirements.txt'}" in out
    assert "requirements" not in _import(basic, tmp_path / "repo", capsys)


def test_a_missing_requirement_fails_the_load_saying_modelport_does_not_install_it(tmp_path: Path) -> None:
    ctx = build_archives(tmp_path)[0]
    repo = tmp_path / "repo"
    _import(ctx, repo)
    version = repo / "ctx" / "1"
    handler = version / "ctx_handler.py"
    handler.write_text("import not_installed_dependency_xyz\n" + handler.read_text())
    runtime = HandlerRuntime(version, read_manifest(version), RuntimeOptions())
    with pytest.raises(SourceError, match=r"requirements file requirements\.txt lists") as raised:
        runtime.load()
    assert "not_installed_dependency_xyz" in str(raised.value)
    assert "pip install -r" in str(raised.value)


def _ask(runtime: HandlerRuntime, *requests: TorchServeRequest) -> list[tuple[int, object]]:
    elements = np.array([encode_request(r) for r in requests], dtype=object)
    replies = [decode_reply(bytes(e)) for e in runtime.predict({"data": elements})["output"]]
    return [(r.status, json.loads(r.body)) for r in replies]


def test_a_describe_request_batched_with_a_prediction_runs_on_its_own(tmp_path: Path) -> None:
    """``BaseHandler`` reads the describe header of request 0 only: in one batch with a prediction, each is
    still answered as alone (TorchServe's describe request never shares a batch)."""
    ctx = build_archives(tmp_path)[0]
    _import(ctx, tmp_path / "repo")
    version = tmp_path / "repo" / "ctx" / "1"
    runtime = HandlerRuntime(version, read_manifest(version), RuntimeOptions())
    runtime.load()
    try:
        predict = TorchServeRequest((Field("body", "application/json", b'{"x": [1, 2, 3, 4]}'),), ())
        describe = TorchServeRequest((), (("describe", "True"),))
        alone = _ask(runtime, predict)[0]
        assert _ask(runtime, predict, describe) == [alone, (200, {"labels": 3, "threshold": 0.4})]
        assert _ask(runtime, describe, predict) == [(200, {"labels": 3, "threshold": 0.4}), alone]
    finally:
        runtime.unload()


@pytest.mark.parametrize("archive_format", ["no-archive", "tgz"])
async def test_no_archive_and_tgz_archives_answer_as_the_mar(tmp_path: Path, archive_format: str) -> None:
    """The subfolder of extra files, the model config and the handler come along in every archive format."""
    flags = {"directory": True} if archive_format == "no-archive" else {"tgz": True}
    other = build_archives(tmp_path / "other", **flags)[0]
    assert other.name == ("ctx" if archive_format == "no-archive" else "ctx.tar.gz")
    repo = tmp_path / "repo"
    _import(build_archives(tmp_path / "mar")[0], repo)
    assert main(["import-mar", str(other), "--repository", str(repo), "--name", "other", "--quiet"]) == 0
    assert (repo / "other" / "1" / "assets" / "labels.json").is_file()
    plane = build(ServerSettings(repository=repo))
    await plane.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(plane)), base_url="http://t") as c:
            answers = [
                await c.post(f"/predictions/{m}", content=body)
                for m in ("ctx", "other")
                for body in (b"ctx", b'{"x": [1, 2, 3, 4]}')
            ]
    finally:
        await plane.close()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    seen = answers[2].json()
    assert seen.pop("model_name") == "other"  # the name it is served by
    assert [a.json() for a in answers[:2]] == [{**seen, "model_name": "ctx"}, answers[3].json()]
    assert answers[3].json()["classes"] == answers[1].json()["classes"]


DECLARED = """
from ts.metrics.metric_type_enum import MetricTypes


def handle(data, context):
    if data is None:
        return None
    context.metrics.get_metric("Declared", MetricTypes.COUNTER).add_or_update(len(data), ["ctxmodel", "Model"])
    return [{"counted": True} for _ in data]
"""

METRICS_YAML = """
model_metrics:
  counter:
    - name: Declared
      unit: Count
      dimensions: [ModelName, Level]
"""


def test_metrics_declared_in_the_archives_metrics_yaml_are_found_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``get_metric`` finds a metric declared in the archive's ``metrics.yaml`` (TorchServe's ``metrics_config``);
    updating it logs TorchServe's ``[METRICS]`` line."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "declared.py").write_text(DECLARED)
    (src / "metrics.yaml").write_text(METRICS_YAML)
    (src / "w.bin").write_text("x")
    mar = archive(
        src / "w.bin", src / "declared.py", "declared", tmp_path / "store", extra_files=[src / "metrics.yaml"]
    )
    _import(mar, tmp_path / "repo")
    version = tmp_path / "repo" / "declared" / "1"
    runtime = HandlerRuntime(version, read_manifest(version), RuntimeOptions())
    runtime.load()
    try:
        with caplog.at_level("INFO", logger="ts.metrics"):
            answers = _ask(runtime, TorchServeRequest((Field("body", "text/plain", b"a"),), ()))
    finally:
        runtime.unload()
    assert answers == [(200, {"counted": True})]
    assert any("[METRICS]Declared.Count:1|#ModelName:ctxmodel,Level:Model" in r.getMessage() for r in caplog.records)
