"""``import-mar --sample FILE``: golden raw samples recorded with the handler's responses, re-checked at load."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from modelport.cli import main
from modelport.manifest import read_manifest
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings

HANDLER = """
import os


def handle(data, context):
    if data is None:
        return None
    score, tag = 0.25 + float(os.environ.get("SAMPLE_NOISE", "0")), os.environ.get("SAMPLE_TAG", "")
    return [{"length": len(row.get("data") or row.get("body")), "score": score, "tag": tag} for row in data]
"""


def _archive(tmp_path: Path) -> Path:
    source = tmp_path / "scorer-archive"
    (source / "MAR-INF").mkdir(parents=True)
    manifest = {"model": {"modelName": "scorer", "handler": "handler.py", "modelVersion": "1.0"}}
    (source / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (source / "handler.py").write_text(HANDLER)
    return source


def _samples(tmp_path: Path) -> list[Path]:
    note, image = tmp_path / "note.txt", tmp_path / "pixel.png"
    note.write_bytes(b"a sentence to score")
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # not UTF-8: recorded as bytes
    return [note, image]


def _import(tmp_path: Path, *flags: str) -> Path:
    repo = tmp_path / "repo"
    command = ["import-mar", str(_archive(tmp_path)), "--repository", str(repo), "--quiet", *flags]
    assert main(command) == 0
    return repo


@asynccontextmanager
async def _served(repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    plane = build(ServerSettings(repository=repo))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client
    finally:
        await plane.close()


def test_samples_are_recorded_with_the_handlers_responses(tmp_path):
    note, image = _samples(tmp_path)
    repo = _import(tmp_path, "--sample", str(note), "--sample", str(image))
    version = repo / "scorer" / "1"
    recorded = json.loads((version / "samples.json").read_text())["samples"]
    assert [(s["file"], s["content_type"]) for s in recorded] == [
        ("samples/1-note.txt", "text/plain"),
        ("samples/2-pixel.png", "image/png"),
    ]
    answers = [json.loads(s["outputs"]["output"]["data"][0]) for s in recorded]
    assert answers == [{"length": 19, "score": 0.25, "tag": ""}, {"length": 264, "score": 0.25, "tag": ""}]
    assert (version / "samples" / "2-pixel.png").read_bytes() == image.read_bytes()
    assert {"samples.json", "samples/1-note.txt", "samples/2-pixel.png"} <= set(read_manifest(version).files)


@pytest.mark.parametrize("workers", [None, 1], ids=["in-process", "worker-process"])
async def test_the_server_rechecks_the_samples_at_load(tmp_path, monkeypatch, workers):
    repo = _import(tmp_path, *(f"--sample={p}" for p in _samples(tmp_path)))
    if workers:
        (repo / "scorer" / "config.yaml").write_text(yaml.safe_dump({"workers": workers}))
    monkeypatch.setenv("SAMPLE_NOISE", "0.000001")  # within the tolerance: still the same answer
    async with _served(repo) as client:
        ready = await client.get("/v2/models/scorer/ready")
    assert ready.status_code == 200, ready.text


async def test_a_handler_that_answers_otherwise_leaves_the_version_not_ready(tmp_path, monkeypatch):
    repo = _import(tmp_path, *(f"--sample={p}" for p in _samples(tmp_path)))
    monkeypatch.setenv("SAMPLE_TAG", "changed")
    async with _served(repo) as client:
        ready = await client.get("/v2/models/scorer/ready")
        index = (await client.post("/v2/repository/index", json={})).json()
    assert ready.status_code == 503 and ready.json()["ready"] is False
    [row] = [r for r in index if r["name"] == "scorer"]
    assert row["state"] == "FAILED" and row["reason"] == ready.json()["reason"]
    assert row["reason"] == (
        "golden sample check failed: samples/1-note.txt (text/plain): output 'output' element 0 is "
        '\'{"length": 19, "score": 0.25, "tag": "changed"}\', recorded \'{"length": 19, "score": 0.25, "tag": ""}\''
    )


def test_samples_need_a_custom_handler(tmp_path, capsys):
    source = tmp_path / "plain-archive"
    (source / "MAR-INF").mkdir(parents=True)
    model = {"modelName": "plain", "handler": "image_classifier", "serializedFile": "m.onnx"}
    (source / "MAR-INF" / "MANIFEST.json").write_text(json.dumps({"model": model}))
    (source / "m.onnx").write_bytes(b"x")
    note = tmp_path / "note.txt"
    note.write_text("x")
    assert main(["import-mar", str(source), "--repository", str(tmp_path / "r"), "--sample", str(note)]) == 2
    assert "--sample records a custom handler's responses" in capsys.readouterr().err
