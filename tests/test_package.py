"""Package-wide contracts: no ML framework on import, honest ``__all__`` lists."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import modelport

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "keras", "onnxruntime", "onnx", "ai_edge_litert", "litert_torch", "locust", "tf2onnx")


def test_import_loads_no_ml_framework():
    code = "import sys, modelport, modelport.cli, modelport.exporters; print(','.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split(",")
    )
    assert not loaded & set(HEAVY), f"import modelport loaded {sorted(loaded & set(HEAVY))}"


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(modelport.__path__, "modelport.")]


@pytest.mark.parametrize("name", _modules())
def test_all_lists_only_existing_public_names(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_export_is_the_function_and_exporters_the_package():
    import modelport.exporters.pipeline

    assert callable(modelport.export) and not hasattr(modelport.export, "__path__")
    assert modelport.exporters.__doc__ and "Export" in modelport.exporters.__doc__
    assert modelport.ExportOptions is modelport.exporters.ExportOptions


def test_serving_imports_none_of_the_exporters():
    """The server loads its own parts only (it used to load seven export modules through the package root)."""
    code = "import sys, modelport.serving.server; print(','.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert not [m for m in loaded.split(",") if m.startswith(("modelport.exporters", "modelport.loadtest"))]


def _pins(path: Path) -> dict[str, str]:
    """Normalised name -> version of every ``name==version`` line (comments and blanks skipped)."""
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    pairs = [ln.split("==") for ln in lines if ln]
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pairs}


# what the borrowed GPU machine has installed (scripts/gpu_check.sh); the wheels bring the rest
ON_GPU_MACHINE = {"numpy", "ml-dtypes", "pyyaml", "prometheus-client", "httpx"}


def test_gpu_wheels_cover_the_core_dependencies_at_the_constrained_versions():
    wheels = _pins(ROOT / "scripts" / "gpu_wheels.txt")
    constraints = _pins(ROOT / "constraints.txt")
    assert {name: v for name, v in wheels.items() if constraints.get(name) != v} == {}, "pins differ from constraints"
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=;\s]", dep, maxsplit=1)[0]).lower() for dep in core}
    assert names - ON_GPU_MACHINE - set(wheels) == set(), "core dependencies the GPU check would lack"


def test_azurite_is_pinned_alike_in_the_makefile_and_its_lock_file():
    """`make azurite` runs `npm ci` on scripts/azurite: the Makefile's version, package.json and the lock agree."""
    version = re.search(r"^AZURITE_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert version is not None
    package = json.loads((ROOT / "scripts" / "azurite" / "package.json").read_text())
    lock = json.loads((ROOT / "scripts" / "azurite" / "package-lock.json").read_text())
    assert package["dependencies"] == {"azurite": version[1]} == lock["packages"][""]["dependencies"]
    assert lock["packages"]["node_modules/azurite"]["version"] == version[1]
    unpinned = [name for name, entry in lock["packages"].items() if name and "integrity" not in entry]
    assert not unpinned, f"lock entries without an integrity hash: {unpinned[:5]}"


def test_perf_analyzer_wheels_are_pinned_with_their_hashes():
    """`make perf-analyzer` downloads them with --require-hashes: each requirement is one version and its sha256."""
    text = (ROOT / "scripts" / "perf_analyzer" / "requirements.txt").read_text().replace("\\\n", " ")
    requirements = [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert {r.split("==")[0] for r in requirements} == {"tritonclient", "nvidia-cuda-runtime-cu12"}
    loose = [r for r in requirements if not re.fullmatch(r"[\w.-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}", r)]
    assert not loose, loose
