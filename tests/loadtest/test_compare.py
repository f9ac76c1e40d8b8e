"""``modelport compare`` on the exported digits models: a real server, real locust runs, the shoot-out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelport.manifest import read_manifest, write_manifest
from tests.loadtest.conftest import modelport, modelport_in
from tests.serving import fakes


def _toy_family(
    repo: Path, variants: tuple[str, ...], runtimes: dict[str, str] | None = None, family: str = "toy"
) -> None:
    """Fake models (no ML framework; echo unless ``runtimes`` names another) of ``family``, one per variant."""
    for variant in variants:
        directory = fakes.write_model(repo, f"{family}-{variant}")
        if runtimes and variant in runtimes:
            (directory.parent / "config.yaml").write_text(yaml.safe_dump({"runtime": runtimes[variant]}))
        manifest = read_manifest(directory).model_copy(update={"family": family, "variant": variant})
        write_manifest(manifest, directory)
        (directory / "model.onnx").write_bytes(bytes(3000))  # the artifact's size, as the export measured it


def test_compare_from_the_users_directory_with_relative_paths(tmp_path):
    """`modelport compare repo/toy` as typed in the user's directory, into the default compare-out."""
    _toy_family(tmp_path / "repo", ("onnx", "torchscript"))
    done = modelport_in(tmp_path, "compare", "repo/toy", "--users", "1", "--duration", "1s", "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "compare-out"
    rows = json.loads((out / "compare.json").read_text())["variants"]
    assert [(r["model"], r["error"]) for r in rows] == [("toy-onnx", ""), ("toy-torchscript", "")]
    assert all(r["levels"][0]["rps"] > 0 for r in rows)
    assert (out / "compare.html").is_file() and (out / "toy-onnx" / "report.html").is_file()


def test_families_side_by_side_in_one_table_and_plot(tmp_path):
    """`modelport compare repo --families toy,other`: the framework shoot-out; --formats picks from each."""
    _toy_family(tmp_path / "repo", ("onnx", "torchscript"))
    _toy_family(tmp_path / "repo", ("onnx", "tflite"), family="other")
    args = ("compare", "repo", "--families", "toy,other", "--formats", "onnx", "--users", "1", "--duration", "1s")
    done = modelport_in(tmp_path, *args, "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "compare-out" / "compare.json").read_text())
    assert data["families"] == ["toy", "other"] and data["family"] == "toy,other"
    assert [(r["model"], r["error"]) for r in data["variants"]] == [("toy-onnx", ""), ("other-onnx", "")]
    table = done.stdout[done.stdout.index("variant ") :].splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["toy-onnx", "other-onnx"]
    html = (tmp_path / "compare-out" / "compare.html").read_text()
    assert "<title>Framework shoot-out: toy, other</title>" in html and html.count("data:image/png;base64,") == 2
    missing = modelport_in(tmp_path, "compare", "repo", "--families", "toy,nope", "--quiet")
    assert missing.returncode == 1 and "no model of family 'nope'" in missing.stderr


def test_requests_take_the_value_ranges_and_dynamic_sizes_the_manifest_knows(tmp_path):
    """Token ids (int64, -1x-1, range 0..5): the served metadata has neither the range nor the length, so every
    variant failed with 'give them with --input', a flag compare does not have; tune's requests already took
    both from the manifest and the golden inputs, and compare's now do too."""
    directory = fakes.write_model(tmp_path / "repo", "ids-onnx", dtype="int64", value_range=(0, 5))
    manifest = read_manifest(directory)
    inputs = tuple(s.model_copy(update={"shape": (-1, -1)}) for s in manifest.inputs)
    outputs = tuple(s.model_copy(update={"shape": (-1, -1)}) if s.name == "y" else s for s in manifest.outputs)
    write_manifest(manifest.model_copy(update={"family": "ids", "inputs": inputs, "outputs": outputs}), directory)
    done = modelport_in(tmp_path, "compare", "repo/ids", "--users", "1", "--duration", "1s", "--quiet", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads((tmp_path / "compare-out" / "compare.json").read_text())["variants"]
    assert row["error"] == "" and row["levels"][0]["rps"] > 0, row


def test_variants_that_fail_leave_a_clean_table_and_a_silent_stderr(tmp_path):
    """No variant can be load-tested: one line per variant (an error's first line), no plotting warnings."""
    runtimes = {"onnx": "tests.loadtest.fake_runtimes:WordyLoadFailure", "tflite": "tests.serving.fakes:FailingRuntime"}
    _toy_family(tmp_path / "repo", ("onnx", "tflite"), runtimes)
    done = modelport_in(tmp_path, "compare", "repo/toy", "--users", "1", "--duration", "1s", "--quiet", timeout=300)
    assert done.returncode == 1 and done.stderr == "", done.stderr
    table = done.stdout[done.stdout.index("variant ") :].splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["toy-onnx", "toy-tflite"] and table[4].startswith("protocol")
    error = table[2][table[2].index("not ready: ") :]
    assert len(error) == 72 and "..." in error, "the first line, its middle cut"
    assert error.startswith("not ready: onnx runtime cannot") and error.endswith("the model file is corrupt"), error
    assert len(table[2]) == len(table[0]) == len(table[3]), "every row as wide as the header"
    rows = json.loads((tmp_path / "compare-out" / "compare.json").read_text())["variants"]
    assert rows[0]["error"].endswith("corrupt\n  at byte 1234 of model.onnx\n  (the export was interrupted?)")
    assert (tmp_path / "compare-out" / "compare.html").is_file()


def test_a_variant_whose_requests_fail_exits_1(tmp_path):
    """The same rows for both variants: the echo one answers all, the poisoned one fails all but row 0's.
    compare exits 1 and compare.json names the variant and level (SLO misses alone only rank)."""
    _toy_family(tmp_path / "repo", ("onnx", "tflite"), {"tflite": "tests.serving.fakes:PoisonRuntime"})
    rows = np.full((4, 3), 13, dtype=np.float32)
    rows[0] = 1
    np.savez(tmp_path / "rows.npz", x=rows)
    args = ("compare", "repo/toy", "--users", "1", "--duration", "1s", "--data", "rows.npz", "--quiet")
    done = modelport_in(tmp_path, *args, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads((tmp_path / "compare-out" / "compare.json").read_text())
    assert data["max_error_rate"] == 0 and not data["ok"]
    (line,) = data["failed_requests"]
    assert re.match(r"toy-tflite at users=1: \d+ of \d+ requests failed \(\d\d(\.\d)?%, --max-error-rate 0%\)$", line)
    assert f"FAILED REQUESTS: {line}" in done.stdout
    assert [r["error"] for r in data["variants"]] == ["", ""]


def test_sizes_are_the_artifacts_in_compare_and_inspect(tmp_path):
    """compare and inspect show one size: the artifact's bytes (no manifest, no golden vectors), one format."""
    _toy_family(tmp_path / "repo", ("onnx",))
    done = modelport_in(tmp_path, "compare", "repo/toy", "--users", "1", "--duration", "1s", "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "compare-out" / "compare.json").read_text())["variants"][0]["size_bytes"] == 3000
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("toy-onnx ")]
    assert " 2.9 KB " in row, row
    inspected = modelport_in(tmp_path, "inspect", "repo")
    (row,) = [line for line in inspected.stdout.splitlines() if line.startswith("toy-onnx ")]
    assert " 2.9 KB " in row, row


@pytest.mark.torch
@pytest.mark.tf
def test_compare_serves_each_variant_and_prints_the_shoot_out(digits_repo, tmp_path):
    run = modelport(
        tmp_path,
        "compare",
        str(digits_repo.root / "digits"),
        "--formats",
        "onnx,torchscript,onnx-dynamic-int8",
        "--users",
        "1,4",
        "--duration",
        "2s",
        "--slo",
        "p99<2s",
        timeout=400,
    )
    assert run.code == 0, run.stderr
    table = run.stdout[run.stdout.index("variant ") :]
    for name in ("digits-onnx ", "digits-torchscript ", "digits-onnx-dynamic-int8 "):
        assert re.search(rf"^{name}.* \d+\.\d KB ", table, re.M), table
    assert "u=1 p50/p99 ms" in table and "u=4 p50/p99 ms" in table and "source model accuracy" in table
    data = json.loads((tmp_path / "compare.json").read_text())
    rows = {row["variant"]: row for row in data["variants"]}
    assert set(rows) == {"onnx", "torchscript", "onnx-dynamic-int8"}
    for row in rows.values():
        assert row["error"] == "" and len(row["levels"]) == 2 and row["max_rps_under_slo"] > 0
        assert row["load_seconds"] is not None and row["size_bytes"] > 10_000 and row["accuracy"] > 0.9
    assert rows["onnx"]["parity_max_abs_error"] < 1e-3 < rows["onnx-dynamic-int8"]["parity_max_abs_error"]
    assert rows["onnx-dynamic-int8"]["quantization"] == "dynamic-int8"
    html = (tmp_path / "compare.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and 'href="digits-onnx/report.html"' in html
    assert (tmp_path / "digits-onnx" / "report.html").exists()
    assert not (tmp_path / "repository").exists(), "the staged repository is removed"


@pytest.mark.torch
@pytest.mark.tf
def test_compare_errors_name_what_exists(digits_repo, tmp_path):
    run = modelport(tmp_path, "compare", str(digits_repo.root / "resnet"))
    assert run.code == 1 and "no model of family 'resnet'" in run.stderr and "'kdigits'" in run.stderr
    run = modelport(tmp_path, "compare", str(digits_repo.root / "digits"), "--formats", "onnx,savedmodel")
    assert run.code == 1 and "--formats ['savedmodel'] not exported for 'digits'" in run.stderr
