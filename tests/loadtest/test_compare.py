"""``modelport compare`` on the exported digits models: a real server, real locust runs, the shoot-out."""

from __future__ import annotations

import json
import re

import pytest

from tests.loadtest.conftest import modelport


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
        assert re.search(rf"^{name}.*KiB", table, re.M), table
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
