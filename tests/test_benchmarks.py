"""Smoke test of the serving benchmark: every system starts, answers correctly and carries load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {"floor", "floor-fastapi", "null", "v2-json", "v2-binary", "tfserving", "v2-grpc", "torchserve"}


def require_torchserve() -> None:
    """CI installs every extra and the machine has Java 17: a missing TorchServe is a failure, not a skip."""
    assert shutil.which("java") is not None, "java is needed for TorchServe"
    assert (Path(sys.executable).parent / "torchserve").exists(), "torchserve is not installed (make install)"


def quick_run(script: str, arguments: list[str], tmp_path: Path, timeout: float) -> dict[str, Any]:
    """``benchmarks/<script> --quick`` with ``arguments``: it must exit 0; its JSON report."""
    return run_benchmark(script, ["--quick", *arguments], tmp_path, timeout)


def run_benchmark(script: str, arguments: list[str], tmp_path: Path, timeout: float) -> dict[str, Any]:
    """``benchmarks/<script>`` with ``arguments``: it must exit 0; its JSON report (``--out``)."""
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *arguments, "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.slow
@pytest.mark.torchserve
@pytest.mark.timeout(180)
def test_serving_benchmark_quick(tmp_path: Path) -> None:
    require_torchserve()
    report = quick_run("serving.py", ["--models", "mlp", "--concurrency", "8"], tmp_path, timeout=150)
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
        assert len(cell["rounds"]) == report["meta"]["rounds"] == 1
        assert cell["peak_pss_mb"] > 0, f"{system}: {cell}"
        assert cell["cpu_us"] > 0, f"{system}: {cell}"  # the server's CPU time per request served
    assert cells["v2-grpc"]["loadgen"] == "grpc"
    assert cells["floor"]["ratio_to_floor"] == 1.0
    assert set(result["servers"]) == {"floor", "floor-fastapi", "floor-null", "modelport", "torchserve"}
    for name, server in result["servers"].items():
        assert server["error"] is None, f"{name}: {server['error']}"
        assert server["startup_s"] > 0
        assert server["peak_rss_mb"] > 0
        assert 0 < server["idle_pss_mb"] <= server["peak_pss_mb"]


def test_serving_report_takes_medians_over_rounds_and_judges_both_directions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Medians per cell over interleaved rounds; a throughput target is >=, a p99 target is <=."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from serving_report import add_ratios, median_cell, targets

    def run(system: str, rps: float, p99: float) -> dict[str, object]:
        load = {"requests": int(rps), "seconds": 1.0, "rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "cpu_us": p99 * 10}
        counts = {"non_2xx": 0, "socket_errors": 0, "errors": 0, "loadgen": "wrk"}
        return {"system": system, "concurrency": 32, **load, **counts}

    floor = median_cell([run("floor", 100, 9.0), run("floor", 300, 1.0), run("floor", 200, 5.0)])
    json_cell = median_cell([run("v2-json", 310, 4.0), run("v2-json", 290, 6.0), run("v2-json", 900, 2.0)])
    binary = median_cell([run("v2-binary", 350, 2.0), {"system": "v2-binary", "concurrency": 32, "error": "boom"}])
    assert (floor["rps"], floor["p99_ms"], floor["requests"], floor["errors"]) == (200, 5.0, 600, 0)
    assert floor["cpu_us"] == 50.0  # the median of the rounds' CPU us per request
    assert len(floor["rounds"]) == 3
    assert binary["rps"] == 350 and binary["errors"] == -1 and "round 2: boom" in binary["error"]
    result = {"raw": {}, "cells": [floor, json_cell, binary]}
    add_ratios(result)
    assert json_cell["ratio_to_floor"] == 310 / 200
    judged = targets({"mlp": result})
    verdicts = {(t["system"], t["metric"]): t for t in judged if t["model"] == "mlp" and t["concurrency"] == 32}
    assert verdicts["v2-json", "items_per_s"]["passed"] is True  # 1.55 >= 1.5
    assert verdicts["v2-json", "items_per_s"]["ratio"] == 3.1  # judged round by round: 3.1, 0.967, 4.5
    assert verdicts["v2-json", "p99_ms"]["ratio"] == 4.0 / 9.0  # 4/9, 6/1, 2/5 (the cells' medians: 4/5)
    assert verdicts["v2-json", "p99_ms"]["passed"] is True and verdicts["v2-json", "p99_ms"]["round_by_round"]
    assert verdicts["v2-binary", "items_per_s"]["passed"] is None  # a cell with a failed round is not judged


def test_serving_report_keeps_the_highest_pss_of_the_rounds_and_judges_it_lower_is_better(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Peak PSS is the highest over the rounds (not the median), a ratio to (b)'s, and a target it must stay under."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from serving_report import add_ratios, median_cell, targets

    def run(system: str, pss: float) -> dict[str, object]:
        load = {"requests": 10, "seconds": 1.0, "rps": 10.0, "p50_ms": 1.0, "p99_ms": 2.0, "peak_pss_mb": pss}
        counts = {"non_2xx": 0, "socket_errors": 0, "errors": 0, "loadgen": "wrk"}
        return {"system": system, "concurrency": 32, **load, **counts}

    floor = median_cell([run("floor", 200.0), run("floor", 190.0), run("floor", 180.0)])
    json_cell = median_cell([run("v2-json", 280.0), run("v2-json", 320.0), run("v2-json", 300.0)])
    binary = median_cell([run("v2-binary", 250.0)])
    assert (floor["peak_pss_mb"], json_cell["peak_pss_mb"]) == (200.0, 320.0)
    result = {"raw": {}, "cells": [floor, json_cell, binary]}
    add_ratios(result)
    assert json_cell["pss_ratio_to_floor"] == 1.6
    judged = {(t["system"], t["metric"]): t for t in targets({"resnet18": result}) if t["model"] == "resnet18"}
    assert judged["v2-json", "peak_pss_mb"]["comparison"] == "<="
    assert judged["v2-json", "peak_pss_mb"]["passed"] is False  # 1.6 > 1.5
    assert judged["v2-binary", "peak_pss_mb"]["passed"] is True  # 1.25 <= 1.5


def test_serving_benchmark_compares_a_baseline_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--baseline adds the -base twin of each v2 system asked for, and the report prints after/before ratios."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import serving
    from serving_report import baseline_lines

    cfg = serving.parse_args(["--systems", "floor,v2-json", "--baseline", str(ROOT), "--out", str(tmp_path / "x")])
    assert cfg.systems == ["floor", "v2-json", "v2-json-base"]
    assert "v2-json-base" not in serving.parse_args(["--systems", "v2-json"]).systems
    with pytest.raises(SystemExit):
        serving.parse_args(["--baseline", str(tmp_path)])  # not a checkout

    def cell(system: str, rps: float, pss: float, cpu_us: float) -> dict[str, object]:
        return {"system": system, "concurrency": 32, "rps": rps, "peak_pss_mb": pss, "cpu_us": cpu_us}

    result = {"cells": [cell("v2-json", 30.0, 300.0, 90.0), cell("v2-json-base", 25.0, 400.0, 120.0)]}
    assert baseline_lines({"resnet18": result}) == (
        "resnet18 c=32: (c) v2 json / (c0) json base: req/s x1.200, CPU us/request x0.750, peak PSS x0.750"
    )


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.torchserve
@pytest.mark.timeout(240)
def test_app_serving_benchmark_quick(tmp_path: Path) -> None:
    """JPEG -> top-5 on TorchServe (custom handler .mar), modelport on the same .mar, and modelport with
    declarative processors (TorchServe API and v2 BYTES): all start, give every image the same answer, carry
    load with no errors."""
    require_torchserve()
    report = quick_run("app_serving.py", ["--concurrency", "8", "--images", "2"], tmp_path, timeout=200)
    assert set(report["servers"]) == {"torchserve", "modelport"}
    assert all(server["error"] is None and server["startup_s"] > 0 for server in report["servers"].values())
    systems = {"torchserve", "mar", "declarative", "v2-bytes"}
    assert set(report["answers"]) == systems
    reference = report["answers"]["torchserve"]["answers"]
    assert len(reference) == 2 and all(len(top5) == 5 for top5 in reference)
    for system, checked in report["answers"].items():
        assert checked["error"] is None, f"{system}: {checked['error']}"
        assert [list(top5) for top5 in checked["answers"]] == [list(top5) for top5 in reference], system
    cells = {cell["system"]: cell for cell in report["cells"]}
    assert set(cells) == systems
    for system, cell in cells.items():
        assert not cell.get("error") and cell["errors"] == 0, f"{system}: {cell}"
        assert cell["rps"] > 0 and cell["requests"] > 0 and cell["cpu_ms_per_request"] > 0, f"{system}: {cell}"
        assert cell["cpu_share"] > 0 and cell["runqueue_wait_share"] >= 0, f"{system}: {cell}"
    assert all(t["ratio"] is not None for t in report["targets"]), report["targets"]
    alone = report["handler_alone"]
    assert "error" not in alone, alone
    assert alone["requests"] >= 32 and alone["cpu_ms_per_request"] > 0
    assert alone["ceiling_rps"] == pytest.approx(1e3 / alone["cpu_ms_per_request"])


def test_app_serving_report_judges_each_target_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Throughput of (b) against TorchServe at the highest concurrency only, p99 at every level, (c) against (b)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from app_report import report_table, targets

    def cell(system: str, concurrency: int, rps: float, p99: float) -> dict[str, object]:
        return {"system": system, "concurrency": concurrency, "rps": rps, "p99_ms": p99, "errors": 0}

    cells = [
        cell("torchserve", 1, 100, 10.0),
        cell("mar", 1, 150, 11.0),
        cell("declarative", 1, 140, 9.0),
        cell("torchserve", 32, 100, 300.0),
        cell("mar", 32, 210, 150.0),
        cell("declarative", 32, 180, 160.0),
    ]
    judged = {(t["metric"], t["system"], t["concurrency"]): t for t in targets(cells)}
    assert set(judged) == {
        ("rps", "mar", 32),
        ("p99_ms", "mar", 1),
        ("p99_ms", "mar", 32),
        ("rps", "declarative", 1),
        ("rps", "declarative", 32),
    }
    assert judged["rps", "mar", 32]["ratio"] == 2.1 and judged["rps", "mar", 32]["passed"] is True
    assert judged["p99_ms", "mar", 1]["passed"] is False  # 1.1 > 1
    assert judged["p99_ms", "mar", 32]["passed"] is True
    assert judged["rps", "declarative", 1]["passed"] is True  # 0.933 >= 0.9
    assert judged["rps", "declarative", 32]["passed"] is False  # 0.857 < 0.9
    assert "2.10" in report_table(cells)


def test_app_serving_states_the_handler_ceiling_against_torchserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler alone bounds any server running it: the line gives the ceiling over TorchServe's req/s at the
    highest concurrency, and says why it is missing when the handler could not be timed."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from app_report import ceiling_line

    alone = {"requests": 640, "cpu_ms_per_request": 4.0, "ceiling_rps": 250.0}
    cells = [
        {"system": "torchserve", "concurrency": 1, "rps": 50.0},
        {"system": "torchserve", "concurrency": 32, "rps": 200.0},
    ]
    line = ceiling_line(alone, cells)
    assert "4.00 ms CPU a request" in line and "at most 250 req/s" in line
    assert "at c=32: 200 req/s" in line and "exceed 1.25x its throughput" in line
    assert ceiling_line(alone, []).endswith("on one core")
    assert ceiling_line({"error": "Traceback ...\nImportError: no ts"}, cells) == (
        "handler alone: not measured (ImportError: no ts)"
    )


def test_app_serving_compares_labels_in_order_and_probabilities_relatively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from app_report import compare

    expected = {"cat": 0.5, "dog": 0.25}
    assert compare(expected, {"cat": 0.50001, "dog": 0.25}) == (None, pytest.approx(2e-5))
    assert compare(expected, {"dog": 0.25, "cat": 0.5})[0] == "labels ['dog', 'cat'] != ['cat', 'dog']"
    assert "differ" in str(compare(expected, {"cat": 0.5, "dog": 0.2501})[0])
    assert compare(expected, ["cat"])[0] is not None


def test_loadgen_cycles_through_its_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several bodies, every connection sends each in turn, starting at a different one."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import asyncio

    import loadgen

    received: list[list[bytes]] = []  # per connection, its first three bodies

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bodies: list[bytes] = []
        received.append(bodies)
        while len(bodies) < 3:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    async def main() -> dict[str, object]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await loadgen.run(f"http://127.0.0.1:{port}/p", [b"a", b"bb", b"ccc"], [], 2, 0.3)

    result = asyncio.run(main())
    assert result["requests"] >= 6
    rotations = ([b"a", b"bb", b"ccc"], [b"bb", b"ccc", b"a"], [b"ccc", b"a", b"bb"])
    first, second = received[:2]  # the two connections' first three requests, each answered
    assert first in rotations and second in rotations and first != second


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


# the GPU machine has no TensorFlow and no scikit-learn: the dry run proves the check does not need them
WITHOUT_TF = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(('tensorflow', 'keras', 'sklearn')));"
    " sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.torch
@pytest.mark.timeout(180)
def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu.py --device cpu --quick: export, in-process timings, served answers and load, all on the CPU."""
    cmd = [sys.executable, "-c", WITHOUT_TF, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=150, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["problems"] == [] and report["errors"] == {}
    assert set(report["export"]["variants"]) == {"torchscript", "pt2"}
    for fmt in ("torchscript", "pt2"):
        timed = report["inprocess"][fmt]
        assert timed["golden"]["passed"], timed["golden"]
        assert all(timed[mode][b]["items_per_s"] > 0 for mode in ("module", "predict") for b in ("1", "2", "4"))
        assert report["serve"]["check"][fmt]["ok"], report["serve"]["check"]
        levels = report["serve"]["levels"][fmt]
        assert set(levels) == {"1", "2", "4"}
        assert all(c["errors"] == 0 and c["items_per_s"] > 0 and c["vs_inprocess"] > 0 for c in levels.values())
    assert report["serve"]["golden_check"] and report["serve"]["exit_code"] == 0
    assert "PASS: gpu check on cpu" in done.stdout


def test_serving_report_prints_the_traced_systems_as_ratios_to_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """v2-json-trace100/-trace1 over v2-json, cell by cell, with the spans each sink received; judged at c=32."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from serving_report import targets, tracing_lines

    def cell(system: str, rps: float, p99: float, own_cpu_us: float) -> dict[str, object]:
        return {"system": system, "concurrency": 32, "rps": rps, "p50_ms": 1.0, "p99_ms": p99, "own_cpu_us": own_cpu_us}

    cells = [
        cell("v2-json", 1000.0, 10.0, 50.0),
        cell("v2-json-trace100", 900.0, 12.0, 80.0),
        cell("v2-json-trace1", 990.0, 10.0, 55.0),
    ]
    result = {"raw": {}, "cells": cells, "servers": {"modelport-trace100": {"spans_exported": 3600}}}
    alone = "server process alone {} CPU us/request (off 50.0): x{} of off's capacity on its core"
    assert tracing_lines({"mlp": result}).splitlines() == [
        "mlp c=32: (c2) json tr1 / (c) v2 json: req/s x0.990, p50 x1.000, p99 x1.000; " + alone.format("55.0", "0.909"),
        "mlp c=32: (c1) json tr100 / (c) v2 json: req/s x0.900, p50 x1.000, p99 x1.200; "
        + alone.format("80.0", "0.625"),
        "mlp modelport-trace100: 3600 spans received by its OTLP sink",
    ]
    judged = [t for t in targets({"mlp": result}) if t["system"] == "v2-json-trace100"]
    assert [(t["ratio"], t["passed"]) for t in judged] == [(0.9, True)]


def test_serving_report_judges_servers_round_by_round_when_every_round_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers measured in the same rounds: a target is the median of the rounds' ratios, not the ratio of
    the medians (a host that slows down between rounds moves both of a round's runs); a failed round falls back
    to the cells' medians."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from serving_report import median_cell, paired_ratio, targets, tracing_lines

    def cell(system: str, rps: list[float], own: list[float], error: str | None = None) -> dict[str, Any]:
        counts = {"requests": 10, "seconds": 1.0, "non_2xx": 0, "socket_errors": 0, "errors": 0, "loadgen": "wrk"}
        runs = [
            {"system": system, "concurrency": 32, "rps": r, "p50_ms": 1.0, "p99_ms": 5.0, "own_cpu_us": o, **counts}
            for r, o in zip(rps, own, strict=True)
        ]
        if error is not None:
            runs[-1]["error"] = error
        return median_cell(runs)

    # the host runs round 2's off run fast and everything after it at half speed; each round's traced run does
    # 0.9x the requests of the off run beside it at 1.1x its CPU a request
    off = cell("v2-json", [1000.0, 1000.0, 500.0], [100.0, 100.0, 200.0])
    traced = cell("v2-json-trace100", [900.0, 450.0, 450.0], [110.0, 220.0, 220.0])
    assert traced["rps"] / off["rps"] == pytest.approx(0.45)  # the medians of separate runs
    assert paired_ratio(traced, off, "rps") == pytest.approx(0.9)
    assert paired_ratio(off, traced, "own_cpu_us") == pytest.approx(1 / 1.1)
    result = {"raw": {}, "cells": [off, traced], "servers": {}}
    judged = [t for t in targets({"mlp": result}) if t["system"] == "v2-json-trace100"]
    assert [(round(t["ratio"], 3), t["passed"]) for t in judged] == [(0.9, True)]
    assert tracing_lines({"mlp": result}).endswith("; round by round: req/s x0.900, capacity x0.909")
    # a round that failed on one side: nothing to pair, so the cells' medians judge
    failed = cell("v2-json-trace100", [900.0, 450.0, 450.0], [110.0, 220.0, 220.0], error="load generator failed")
    assert paired_ratio(failed, off, "rps") is None


@pytest.mark.torch
@pytest.mark.timeout(180)
def test_hotpath_inprocess_reports_cpu_per_request_for_every_protocol(tmp_path: Path) -> None:
    out = tmp_path / "hotpath.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hotpath_inprocess.py"), "--requests", "64", "--rounds", "1"]
    cmd += ["--concurrency", "1,4", "--repo", str(tmp_path / "repo"), "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = json.loads(out.read_text())
    protocols = ("v2-json", "v2-binary", "tfserving", "torchserve")
    assert set(cells) == {f"{p}@{c}" for p in protocols for c in (1, 4)}
    assert all(us > 0 for us in cells.values()), cells


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_http_protocol_bound_measures_each_server_at_each_concurrency(tmp_path: Path) -> None:
    """The three null servers (ASGI, protocol with a task, protocol without) all answer under load (the python
    load generator: wrk is optional), and the report holds each one's req/s and CPU per request."""
    loadgen = "python"
    arguments = ["--concurrency", "1,4", "--duration", "1", "--loadgen", loadgen]
    report = quick_run("http_protocol_bound.py", arguments, tmp_path, timeout=100)
    cells = {(c["server"], c["concurrency"]): c for c in report["cells"]}
    assert set(cells) == {(s, c) for s in ("asgi", "proto-task", "proto-sync") for c in (1, 4)}
    assert all(c["rps"] > 0 and c["cpu_us_per_request"] > 0 for c in cells.values()), cells
    assert report["meta"]["loadgen"] == loadgen
    assert all(cells[("asgi", c)]["saves_us_vs_asgi"] == 0 for c in (1, 4))


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(180)
def test_grpc_latency_measures_modelport_against_the_grpc_floor(tmp_path: Path) -> None:
    """The fixed-answer grpc.aio floor, modelport over gRPC and over HTTP all answer tritonclient's checked requests
    (sync at c=1, aio at c=2), and the report holds each one's req/s, latency, server CPU per request and ratios."""
    servers = ("floor-uvloop", "modelport", "modelport-http")
    arguments = ["--servers", ",".join(servers), "--concurrency", "1,2", "--repo", str(tmp_path / "repo")]
    report = quick_run("grpc_latency.py", arguments, tmp_path, timeout=170)
    cells = {(c["server"], c["concurrency"]): c for c in report["cells"]}
    assert set(cells) == {(s, c) for s in servers for c in (1, 2)}
    for cell in cells.values():
        assert cell["failures"] == 0, cell
        assert cell["rps"] > 0 and cell["cpu_us"] > 0 and 0 < cell["p50_ms"] <= cell["p99_ms"], cell
        assert cell["cpu_us_loop"] > 0 and cell["switches"] > 0, cell
    for c in (1, 2):  # grpc's own threads work for the gRPC servers only
        assert cells[("modelport", c)]["cpu_us_event_engine"] > 0 and cells[("floor-uvloop", c)]["cpu_us_other"] > 0
        assert cells[("modelport-http", c)]["cpu_us_event_engine"] == 0
    assert all(cells[("floor-uvloop", c)]["cpu_us_vs_floor-uvloop"] == 1.0 for c in (1, 2))
