"""Package-wide contracts: no ML framework on import, honest ``__all__`` lists."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import modelport

HEAVY = ("torch", "tensorflow", "keras", "onnxruntime", "onnx", "ai_edge_litert", "litert_torch", "locust", "tf2onnx")


def test_import_loads_no_ml_framework():
    code = "import sys, modelport, modelport.cli, modelport.export; print(','.join(sorted(sys.modules)))"
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


def test_export_is_the_function():
    import modelport.export.pipeline

    assert callable(modelport.export)
    assert modelport.export.__doc__ and "Export" in modelport.export.__doc__
