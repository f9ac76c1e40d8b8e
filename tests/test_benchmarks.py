"""Smoke test of the serving benchmark: every system starts, answers correctly and carries load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {"floor", "floor-fastapi", "v2-json", "v2-binary", "tfserving", "v2-grpc", "torchserve"}


@pytest.mark.slow
@pytest.mark.torchserve
@pytest.mark.timeout(180)
def test_serving_benchmark_quick(tmp_path: Path) -> None:
    # CI installs every extra and the machine has Java 17: a missing TorchServe is a failure, not a skip
    assert shutil.which("java") is not None, "java is needed for TorchServe"
    assert (Path(sys.executable).parent / "torchserve").exists(), "torchserve is not installed (make install)"
    out = tmp_path / "serving.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--quick", "--models", "mlp"]
    cmd += ["--concurrency", "8", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["loadgen"] in {"wrk", "python"}
    result = report["models"]["mlp"]
    assert result["raw"]["1"]["items_per_s"] > 0
    assert result["raw"]["32"]["items_per_s"] > 0
    cells = {cell["system"]: cell for cell in result["cells"]}
    assert set(cells) == SYSTEMS
    for system, cell in cells.items():
        assert not cell.get("error"), f"{system}: {cell.get('error')}"
        assert cell["errors"] == 0, f"{system}: {cell}"
        assert cell["rps"] > 0, f"{system}: {cell}"
    for name, server in result["servers"].items():
        assert server["error"] is None, f"{name}: {server['error']}"
        assert server["startup_s"] > 0
        assert server["peak_rss_mb"] > 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_benchmark_smoke(tmp_path: Path) -> None:
    """A 12-second soak: every protocol answers, windows are sampled, the verdict is computed."""
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--duration", "12", "--warmup", "4", "--window", "2"]
    done = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=200, check=False)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    verdict = report["verdict"]
    assert verdict["errors"] == 0, report["windows"]
    assert verdict["server_exit_code"] == 0
    assert len(report["windows"]) == 6
    served = set().union(*(w["by_protocol"] for w in report["windows"]))
    assert served == {"v2-json", "v2-binary", "v2-grpc", "tfserving", "torchserve"}
    assert verdict["rss_last_mib"] > 0 and verdict["fd_last"] > 0
