"""Smoke tests of the ResNet-18 investigation scripts: ``resnet_memory.py`` (in-process) and ``resnet_batches.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import run_benchmark


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(240)
def test_resnet_memory_measures_every_variant_and_batch(tmp_path: Path) -> None:
    """Each cell in its own process: speeds, and a peak above the loaded session (a run holds its tensors)."""
    arguments = ["--batches", "2,2/1", "--variants", "default,no-arena", "--seconds", "0.2", "--rounds", "1"]
    report = run_benchmark("resnet_memory.py", [*arguments, "--cpu", "-1"], tmp_path, timeout=220)
    cells = report["cells"]
    assert sorted(cells) == ["default", "no-arena"]
    for variant in cells.values():
        assert sorted(variant) == ["2", "2/1"]
        for cell in variant.values():
            assert cell["items_per_s"] > 0 and cell["items_per_cpu_s"] > 0
            assert cell["loaded_mb"] > 40  # the ResNet-18's weights
            assert cell["above_mb"] > 1


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(240)
def test_resnet_batches_counts_the_batches_the_server_ran(tmp_path: Path) -> None:
    """Every item the server computed during a load is in its batch counts, and its CPU per item is measured."""
    arguments = ["--quick", "--concurrency", "4", "--systems", "v2-binary", "--duration", "2"]
    report = run_benchmark("resnet_batches.py", arguments, tmp_path, timeout=220)
    (cell,) = report["v2-binary c=4"]
    counted = sum(int(size) * batch["count"] for size, batch in cell["batches"].items())
    assert counted == cell["items"] > 0
    assert cell["items_per_cpu_s"] > 0 and cell["peak_pss_mb"] > 40
    assert 1 <= cell["mean_batch"] <= 4
