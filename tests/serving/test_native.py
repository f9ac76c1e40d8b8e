"""The compiled hot path (modelport/serving/native.py): used exactly when its build matches the sources and
this interpreter; ``make test`` runs the whole suite on it (``MODELPORT_NATIVE=require``)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from modelport.serving import native

ROOT = Path(__file__).resolve().parents[2]


def imported_files(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter imports the hot modules and prints where each came from."""
    code = (
        "import importlib; from modelport.serving import native\n"
        "print(native.active())\n"
        "for name in native.HOT_MODULES: print(importlib.import_module(name).__file__)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_hot_modules_come_from_the_build_exactly_when_it_is_current():
    wanted = os.environ.get("MODELPORT_NATIVE", "1") not in native._OFF
    expected = wanted and native._unusable(native.default_dir()) is None
    assert native.active() == expected
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in native.HOT_MODULES:
        path = str(importlib.import_module(name).__file__)
        assert path.endswith(suffix) == expected, path
        assert path.startswith(str(native.default_dir())) == expected, path
    if os.environ.get("MODELPORT_NATIVE") == "require":  # make test: the suite runs what production runs
        assert native.active()


def test_off_runs_the_python_sources():
    done = imported_files({"MODELPORT_NATIVE": "0"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "False"
    assert all(line.endswith(".py") for line in lines[1:]), lines


@pytest.mark.parametrize(
    ("stamp", "why"),
    [
        (None, "is not built"),
        ("cpython-311 .so\nmodelport.serving.v2\n0000\n", "was built from other sources or for another Python"),
        ("abi", "was built from other sources or for another Python"),
    ],
    ids=["missing", "other-sources", "other-python"],
)
def test_a_build_that_does_not_match_is_never_used(tmp_path, stamp, why):
    if stamp == "abi":  # the sources match, the interpreter does not
        stamp = native._stamp_text(native.sources_digest()).replace(sys.implementation.cache_tag, "cpython-399", 1)
    if stamp is not None:
        (tmp_path / native.STAMP).write_text(stamp)
    assert native._unusable(tmp_path) == why
    env = {"MODELPORT_NATIVE_DIR": str(tmp_path)}
    done = imported_files({**env, "MODELPORT_NATIVE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "False"
    assert all(line.endswith(".py") for line in done.stdout.split()[1:])
    refused = imported_files({**env, "MODELPORT_NATIVE": "require"})
    assert refused.returncode == 1
    assert f"MODELPORT_NATIVE=require: the compiled hot path in {tmp_path} {why} (make native builds it)" in (
        refused.stderr
    )


def test_a_current_stamp_without_its_library_is_refused(tmp_path):
    (tmp_path / native.STAMP).write_text(native._stamp_text(native.sources_digest()))
    refused = imported_files({"MODELPORT_NATIVE_DIR": str(tmp_path), "MODELPORT_NATIVE": "require"})
    assert refused.returncode == 1
    assert f"{native.GROUP}__mypyc{sysconfig.get_config_var('EXT_SUFFIX')} is missing" in refused.stderr
