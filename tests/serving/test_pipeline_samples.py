"""A pipeline's golden raw samples: recorded by ``modelport pipeline-golden``, checked when the server builds it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from modelport.cli import main
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes

PARSE = """
import os

import numpy as np


def parse(payloads):
    factor = float(os.environ.get("PARSE_FACTOR", "1"))
    return [{"x": factor * np.array([[float(v) for v in p.decode().split(",")]], np.float32)} for p in payloads]
"""
PIPELINE = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "doubled", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "top", "datatype": "BYTES", "shape": [-1]}],
    "steps": [
        {"processors": {"pre": [{"kind": "custom", "callable": "parsing:parse"}]},
         "input_map": {"data": "text"}, "output_map": {"x": "parsed"}},
        {"model": "first", "input_map": {"x": "parsed"}, "output_map": {"y": "doubled"}},
        {"processors": {"post": [{"kind": "topk", "k": 1, "output": "scores"}]},
         "input_map": {"scores": "doubled"}, "output_map": {"output": "top"}},
    ],
}  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    fakes.write_model(root, "first")
    (root / "parsed").mkdir()
    (root / "parsed" / "config.yaml").write_text(yaml.safe_dump({"pipeline": PIPELINE}))
    (root / "parsed" / "parsing.py").write_text(PARSE)
    fakes.GATE.set()
    return root


async def _record(repo: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.txt"
    first.write_text("1,2,3")
    second.write_text("3,1,2")
    command = ["pipeline-golden", str(repo), "parsed", "--sample", str(first), "--sample", str(second)]
    assert await asyncio.to_thread(main, command) == 0  # the command runs an event loop of its own


async def _state(repo: Path) -> tuple[bool, str]:
    plane = build(ServerSettings(repository=repo))
    await plane.start()
    try:
        return plane.model_ready("parsed")
    finally:
        await plane.close()


async def test_pipeline_golden_records_the_pipelines_outputs(repo, tmp_path):
    await _record(repo, tmp_path)
    recorded = json.loads((repo / "parsed" / "samples.json").read_text())["samples"]
    assert [(s["file"], s["content_type"]) for s in recorded] == [
        ("samples/1-a.csv", "text/csv"),
        ("samples/2-b.txt", "text/plain"),
    ]
    assert [s["outputs"]["doubled"]["data"] for s in recorded] == [[2, 4, 6], [6, 2, 4]]
    assert [json.loads(s["outputs"]["top"]["data"][0]) for s in recorded] == [{"2": 6}, {"0": 6}]
    assert (repo / "parsed" / "samples" / "1-a.csv").read_text() == "1,2,3"
    assert await _state(repo) == (True, "")


async def test_a_pipeline_that_answers_otherwise_is_not_ready_and_says_which_sample(repo, tmp_path, monkeypatch):
    await _record(repo, tmp_path)
    monkeypatch.setenv("PARSE_FACTOR", "1.5")
    ready, reason = await _state(repo)
    assert not ready
    assert reason == (
        "golden sample check failed: samples/1-a.csv (text/csv): "
        "output 'doubled' differs by up to 3 (rtol=0.0001, atol=1e-05)"
    )


async def test_samples_are_checked_when_a_loaded_pipeline_is_built(repo, tmp_path, monkeypatch):
    await _record(repo, tmp_path)
    spec = yaml.safe_load((repo / "parsed" / "config.yaml").read_text())
    (repo / "parsed" / "config.yaml").unlink()
    (repo / "parsed" / "hidden.yaml").write_text(yaml.safe_dump(spec))
    plane = build(ServerSettings(repository=repo, model_control=True))
    await plane.start()
    try:
        (repo / "parsed" / "config.yaml").write_text((repo / "parsed" / "hidden.yaml").read_text())
        monkeypatch.setenv("PARSE_FACTOR", "2")
        await plane.load("parsed")
        ready, reason = plane.model_ready("parsed")
    finally:
        await plane.close()
    assert not ready and reason.startswith("golden sample check failed: samples/1-a.csv"), reason


def test_pipeline_golden_needs_a_pipeline_of_payloads(repo, tmp_path, capsys):
    sample = tmp_path / "x.txt"
    sample.write_text("1,2,3")
    assert main(["pipeline-golden", str(repo), "first", "--sample", str(sample)]) == 2
    assert "'first' is a onnx model, not a pipeline" in capsys.readouterr().err


def test_pipeline_golden_names_a_repository_that_is_not_a_folder(tmp_path, capsys):
    sample = tmp_path / "x.txt"
    sample.write_text("1,2,3")
    assert main(["pipeline-golden", str(tmp_path / "nope"), "parsed", "--sample", str(sample)]) == 2
    # was "Request for unknown model: 'parsed' is not found", the path's mistake blamed on the name
    assert f"model repository {tmp_path / 'nope'} is not a directory" in capsys.readouterr().err
