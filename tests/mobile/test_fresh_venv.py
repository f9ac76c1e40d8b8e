"""The proof: a virtualenv holding only numpy and ai-edge-litert verifies and benchmarks both bundles, and
one holding only numpy, ai-edge-litert and Pillow verifies the image bundles' raw samples and classifies images
(numpy, ai-edge-litert and tokenizers: the text bundle's samples and texts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"numpy", "ai-edge-litert", "pip", "setuptools"}
# ai-edge-litert's own dependencies
LITERT_DEPS = {
    "backports-strenum",
    "backports.strenum",
    "flatbuffers",
    "ml-dtypes",
    "protobuf",
    "tqdm",
    "typing-extensions",
}


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def _venv(tmp_path_factory: pytest.TempPathFactory, *packages: str) -> Path:
    """A virtualenv with ``packages`` pinned like the project, nothing else (wheels: registry or pip cache)."""
    venv = tmp_path_factory.mktemp("edge-venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    python = venv / "bin" / "python"
    pins = [f"-c{ROOT / 'constraints.txt'}", *packages]
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins], venv.parent, timeout=600)
    return python


def _installed(python: Path, cwd: Path) -> set[str]:
    listed = _run([str(python), "-m", "pip", "list", "--format=json"], cwd).stdout
    return {re.sub(r"[-_.]+", "-", p["name"]).lower() for p in json.loads(listed)}


@pytest.fixture(scope="session")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy + ai-edge-litert, nothing else."""
    return _venv(tmp_path_factory, "numpy", "ai-edge-litert")


@pytest.fixture(scope="session")
def edge_venv_pillow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy + ai-edge-litert + Pillow, nothing else."""
    return _venv(tmp_path_factory, "numpy", "ai-edge-litert", "pillow")


@pytest.mark.tflite
@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.slow
def test_bundles_verify_and_bench_with_only_numpy_and_litert(bundles, edge_venv, tmp_path):
    installed = _installed(edge_venv, tmp_path)
    assert installed - ALLOWED <= LITERT_DEPS, f"the edge venv holds more than numpy + LiteRT: {sorted(installed)}"
    missing = subprocess.run([str(edge_venv), "-c", "import modelport"], cwd=tmp_path, capture_output=True, check=False)
    assert missing.returncode != 0, "modelport must not be importable on the device"
    for source in (bundles.keras, bundles.torch):
        bundle = shutil.copytree(source, tmp_path / source.name)
        runtime = str(bundle / "modelport_edge.py")
        verified = _run([str(edge_venv), "-I", runtime, "verify", str(bundle)], tmp_path).stdout
        assert f"verified: {source.name} reproduces its expected outputs on this device" in verified
        report = tmp_path / f"{source.name}.bench.json"
        done = _run(
            [str(edge_venv), "-I", runtime, "bench", str(bundle), "--runs", "50", "--json", str(report)], tmp_path
        )
        print(done.stdout)  # the table, for the test log
        results = json.loads(report.read_text())
        variants = json.loads((bundle / "bundle.json").read_text())["variants"]
        litert = [name for name, v in variants.items() if v["runtime"] == "tflite"]
        assert [r["variant"] for r in results["variants"]] == litert
        if "ort" in variants:
            assert "ort            not run: onnxruntime is not installed" in verified
        for r in results["variants"]:
            assert r["runtime"] in ("ai_edge_litert", "onnxruntime") and r["p50_ms"] > 0 and r["peak_rss_mb"] > 10
            assert r["cold_start_ms"] >= r["import_ms"] > 0


# in the device venv: open (sha256, golden vectors, raw samples), classify one image, report peak RSS
CLASSIFY = """
import json, sys
sys.path.insert(0, sys.argv[1])
from modelport_edge import EdgeModel
for variant in json.loads(open(sys.argv[1] + "/bundle.json").read())["variants"]:
    print(json.dumps(EdgeModel.open(sys.argv[1], variant).classify_image(sys.argv[2], k=2)))
status = open("/proc/self/status").read()  # VmHWM: this process's own peak (ru_maxrss counts the forking parent)
print(int(status.split("VmHWM:")[1].split()[0]) / 1024)
"""


@pytest.mark.tflite
@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.slow
def test_image_bundles_verify_and_classify_with_only_numpy_litert_and_pillow(image_bundles, edge_venv_pillow, tmp_path):
    installed = _installed(edge_venv_pillow, tmp_path)
    assert installed - ALLOWED - {"pillow"} <= LITERT_DEPS, f"more than numpy + LiteRT + Pillow: {sorted(installed)}"
    for source in (image_bundles.torch, image_bundles.keras):
        bundle = shutil.copytree(source, tmp_path / source.name)
        runtime = str(bundle / "modelport_edge.py")
        verified = _run([str(edge_venv_pillow), "-I", runtime, "verify", str(bundle)], tmp_path).stdout
        assert verified.count("8 raw samples (decode -> label on this device)") == 4, verified
        assert f"verified: {source.name} reproduces its expected outputs on this device" in verified
        samples = json.loads((bundle / "bundle.json").read_text())["samples"]
        image = str(bundle / samples[0]["file"])
        done = _run([str(edge_venv_pillow), "-I", "-c", CLASSIFY, str(bundle), image], tmp_path).stdout.splitlines()
        answers, peak_rss_mb = [json.loads(line) for line in done[:-1]], float(done[-1])
        server_top1 = next(iter(samples[0]["response"]))
        assert len(answers) == 4 and all(next(iter(a)) == server_top1 for a in answers), answers
        assert peak_rss_mb < 80, f"{source.name}: peak RSS {peak_rss_mb:.0f} MB over the 80 MB goal"


@pytest.fixture(scope="session")
def edge_venv_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy + ai-edge-litert + tokenizers (and tokenizers' own dependencies), no Pillow, no modelport."""
    return _venv(tmp_path_factory, "numpy", "ai-edge-litert", "tokenizers")


# in the device venv: open (sha256, golden vectors, text samples) and classify every sample's text
CLASSIFY_TEXT = """
import json, pathlib, sys
sys.path.insert(0, sys.argv[1])
from modelport_edge import EdgeModel
model = EdgeModel.open(sys.argv[1])
for path in sys.argv[2:]:
    print(json.dumps(model.classify_text(pathlib.Path(path).read_text(encoding="utf-8"), k=None)))
"""


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_text_bundle_verifies_and_classifies_with_only_numpy_litert_and_tokenizers(
    text_bundle, edge_venv_tokenizers, tmp_path
):
    installed = _installed(edge_venv_tokenizers, tmp_path)
    assert "tokenizers" in installed and not installed & {"pillow", "torch", "tensorflow", "modelport"}, installed
    bundle = shutil.copytree(text_bundle.path, tmp_path / "text")
    runtime = str(bundle / "modelport_edge.py")
    samples = json.loads((bundle / "bundle.json").read_text())["samples"]
    verified = _run([str(edge_venv_tokenizers), "-I", runtime, "verify", str(bundle)], tmp_path).stdout
    assert f"{len(samples)} raw samples (decode -> label on this device)" in verified, verified
    files = [str(bundle / s["file"]) for s in samples]
    done = _run([str(edge_venv_tokenizers), "-I", "-c", CLASSIFY_TEXT, str(bundle), *files], tmp_path).stdout
    answers = [json.loads(line) for line in done.splitlines()]
    for answer, sample in zip(answers, samples, strict=True):
        assert list(answer) == list(sample["response"])
        assert list(answer.values()) == pytest.approx(list(sample["response"].values()), abs=1e-5)
