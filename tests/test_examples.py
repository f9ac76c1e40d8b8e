"""Every README example is a file under examples/, and each one runs here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelport.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run an example (from the repository root unless ``cwd``) with this venv's tools on PATH; it must exit 0."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.slow
def test_export_cli_example(tmp_path):
    done = _run("bash", "examples/export_cli.sh", str(tmp_path))
    assert "tflite-full-int8" in done.stdout and "FAIL" not in done.stdout
    assert read_manifest(tmp_path / "repo" / "digits-keras-tflite-full-int8" / "1").quantization is not None
    assert (tmp_path / "repo" / "digits-torch-pt2" / "1" / "model.pt2").exists()


@pytest.mark.torch
@pytest.mark.tf
def test_export_api_example(tmp_path):
    _run(sys.executable, "examples/export_api.py", str(tmp_path))
    names = sorted(p.name for p in (tmp_path / "repo").iterdir() if not p.name.startswith("."))
    assert names == [
        "api-keras-savedmodel",
        "api-keras-tflite",
        "api-keras-tflite-float16",
        "api-torch-onnx",
        "api-torch-pt2",
    ]


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.slow
def test_demo_script_exports_both_models(tmp_path):
    """examples/digits/demo.py is what `make demo` runs (it trains with examples/digits/train.py), with a
    relative --out as `make demo` gives it (here relative to a fresh directory, not the checkout)."""
    done = _run(sys.executable, str(ROOT / "examples/digits/demo.py"), "--out", "demo-out", cwd=tmp_path)
    assert done.stdout.count(" pass") >= 19 and "FAIL" not in done.stdout and "ERROR" not in done.stdout
    assert done.stdout.count("JSON == binary: True") == 19  # torch: 10 variants, keras: 9
    assert "test accuracy" in done.stdout
    verified = [line for line in done.stdout.splitlines() if "golden cases" in line and line.rstrip().endswith("OK")]
    assert len(verified) >= 5, "the edge bundles of both models verify with the standalone runtime"
    raw = [line for line in done.stdout.splitlines() if "8 raw samples (decode -> label on this device)" in line]
    assert len(raw) == len(verified), "each bundled variant checks the digit PNGs through its own image processing"
    assert done.stdout.count("digit-0-is-") >= 2, "predict --image answers for a sample of each bundle"
    assert "compare report:" in done.stdout and "failed:" not in done.stdout, "the demo ends with a clean shoot-out"
    assert (tmp_path / "demo-out" / "compare" / "compare.html").is_file()
    shoot_out = json.loads((tmp_path / "demo-out" / "shoot-out" / "compare.json").read_text())
    assert [r["model"] for r in shoot_out["variants"]] == ["digits-torch-onnx", "digits-keras-onnx"]
    assert all(r["error"] == "" and r["max_rps"] > 0 for r in shoot_out["variants"])
    assert (tmp_path / "demo-out" / "loadtest" / "report.html").is_file()


def test_readme_examples_are_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    referenced = set(re.findall(r"examples/[\w/.-]+\.(?:py|sh)", readme))
    assert referenced, "the README shows no example files"
    missing = [p for p in referenced if not (ROOT / p).exists()]
    assert not missing, missing
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    untested = [p for p in referenced if p not in tests and Path(p).stem not in tests]
    assert not untested, f"README examples without a test: {untested}"


@pytest.mark.torch
def test_serve_and_infer_example(digits_repo):
    done = _run(sys.executable, "examples/serve_and_infer.py", str(digits_repo.root), "digits-onnx", timeout=300)
    json_line, binary_line = done.stdout.splitlines()[-2:]
    assert json_line.startswith("JSON  : logits") and binary_line.startswith("binary:")
    assert json_line.split("[")[1] == binary_line.split("[")[1], "both encodings give the same numbers"


def test_custom_runtime_example(tmp_path):
    """A runtime class named by config.yaml serves a model end to end (load, golden check, HTTP inference)."""
    done = _run(sys.executable, "examples/custom_runtime.py", str(tmp_path), timeout=300)
    lines = done.stdout.splitlines()
    assert "providers    : ['onnx.reference']" in lines, "the custom runtime, not onnxruntime, served the model"
    assert "matches numpy: True" in lines
    config = (tmp_path / "repo" / "softmax" / "config.yaml").read_text()
    assert "runtime: examples.custom_runtime:ReferenceRuntime" in config


def test_serve_images_example(tmp_path):
    """An image classifier with processors answers curl -T, curl -F (one row per file) and tritonclient BYTES."""
    work = tmp_path / "out"  # as the README runs it: `python examples/serve_images.py out/`, a folder it makes
    done = _run(sys.executable, "examples/serve_images.py", str(work), timeout=300)
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if line.startswith(("curl", "triton")))
    assert lines["curl -T     "].strip().startswith('{"red":')
    assert '[{"red":' in lines["curl -F     "] and '{"blue":' in lines["curl -F     "]
    assert lines["tritonclient"].strip().startswith("[{'red':")


def _answers(stdout: str) -> dict[str, str]:
    """An example's ``what: answer`` lines, by ``what``."""
    lines = (line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    return {what.strip(): answer.strip() for what, answer in lines}


def test_serve_text_example(tmp_path):
    """A text classifier with a tokenizer.json answers raw text, v2 JSON BYTES and tritonclient BYTES alike."""
    work = tmp_path / "out"  # as the README runs it: `python examples/serve_text.py out/`, a folder it makes
    done = _run(sys.executable, "examples/serve_text.py", str(work), timeout=300)
    answers = _answers(done.stdout)
    assert "WRONG" not in done.stdout
    assert answers["curl raw text"].startswith("{'positive': 0.88")
    assert answers["v2 JSON BYTES"] == answers["tritonclient"]
    assert "{'negative': 0.88" in answers["tritonclient"]
    assert (work / "repo" / "sentiment-onnx" / "1" / "tokenizer.json").is_file()


def test_serve_pipeline_example(tmp_path):
    """examples/pipeline/config.yaml serves two models in a row on v2 and /predictions, as running them by hand."""
    work = tmp_path / "out"  # as the README runs it: `python examples/serve_pipeline.py out/`, a folder it makes
    done = _run(sys.executable, "examples/serve_pipeline.py", str(work), timeout=300)
    answers = _answers(done.stdout)
    assert "WRONG" not in done.stdout
    assert answers["v2 quadrupled"] == "[[4.0, 8.0, 12.0], [2.0, 16.0, -4.0]]"
    assert answers["/predictions"] == "{'quadrupled': [4.0, 8.0, 12.0], 'top': {'2': 12.0, '1': 8.0}}"
    served = (work / "repo" / "quadruple" / "config.yaml").read_text()
    assert served == (ROOT / "examples" / "pipeline" / "config.yaml").read_text()


@pytest.mark.torch
def test_migrate_torchserve_example(tmp_path):
    """A .mar with a custom Pillow handler (examples/mar/color_handler.py), imported with --sample, answers
    curl -T and curl -F."""
    done = _run(sys.executable, "examples/migrate_torchserve.py", str(tmp_path), timeout=300)
    answers = _answers(done.stdout)
    assert "WRONG" not in done.stdout
    assert answers["curl -T"].startswith("{'red': 0.9")
    assert answers["curl -F"].startswith("[{'red': 0.9") and "{'blue': 0.9" in answers["curl -F"]
    recorded = json.loads((tmp_path / "repo" / "colors" / "1" / "samples.json").read_text())["samples"]
    assert [s["file"] for s in recorded] == ["samples/1-red.jpg"]
