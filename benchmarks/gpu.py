"""GPU check: a ResNet-18 exported by modelport to TorchScript and .pt2, timed in-process and served on one device.

    python benchmarks/gpu.py --out OUTDIR [--device cuda] [--quick]

1. export: ``modelport.export`` of the plain-torch ResNet-18 of ``bench_models`` to torchscript and pt2
   (the parity gate runs on the CPU, as always);
2. in-process on the device, per format and batch size: the loaded module on device tensors (synchronised
   after each call: the device's own speed) and modelport's runtime ``predict`` (numpy in and out, what the
   server runs per batch); a warm-up, then the median of timed calls; the golden vectors re-checked there;
3. served: ``modelport serve REPO --device DEVICE`` (started by ``modelport.launcher``), each format checked
   against the in-process output, then closed-loop KServe v2 binary requests of one item at each concurrency
   (``loadgen.py``): req/s, items/s, p50/p99, and served items/s over in-process ``predict`` at the largest batch.

A model that fails its golden check on the device at load is not ready (the server says why): the reason is
recorded and the server restarted with ``--no-golden-check``, so throughput is still measured. The JSON
(OUTDIR/gpu_check.json) is rewritten after every phase, so a run cut short keeps what it measured; the server
logs go to OUTDIR too. Exit status 1 when a phase failed, a golden check failed or a served answer was wrong.
``--quick`` (the CPU dry run of the test suite): 32x32 images, batch sizes and concurrency 1,2,4, short levels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from bench_models import build  # noqa: E402

from modelport.launcher import LaunchOptions, launched  # noqa: E402

FORMATS = ("torchscript", "pt2")
NAME = "resnet18"


@dataclass(frozen=True)
class Config:
    """One run's settings (``--quick`` shrinks every one of them)."""

    out: Path
    device: str
    image: int
    batches: tuple[int, ...]
    concurrency: tuple[int, ...]
    level_s: float  # load per (format, concurrency)
    warmup_s: float  # unmeasured load before each level
    timing_s: float  # in-process time budget per (format, mode, batch)
    warm_calls: int  # untimed in-process calls first
    min_calls: int  # timed in-process calls at least
    threads: int  # intra-op threads, in-process and served (0 = the framework's default)
    quick: bool


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and the server logs")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    p.add_argument("--quick", action="store_true", help="32x32 images, 1,2,4, short levels: a dry run")
    p.add_argument("--duration", type=float, help="seconds of load per level (default 8; --quick 1)")
    args = p.parse_args(argv)
    quick = bool(args.quick)
    return Config(
        out=args.out,
        device=args.device,
        image=32 if quick else 224,
        batches=(1, 2, 4) if quick else (1, 8, 32),
        concurrency=(1, 2, 4) if quick else (1, 8, 32),
        level_s=args.duration or (1.0 if quick else 8.0),
        warmup_s=0.3 if quick else 1.0,
        timing_s=0.2 if quick else 2.0,
        warm_calls=1 if quick else 10,
        min_calls=3 if quick else 10,
        threads=1 if quick else 0,  # a shared CPU thrashes with two spinning OpenMP threads
        quick=quick,
    )


# --------------------------------------------------------------------------- environment and export


def environment(cfg: Config) -> dict[str, Any]:
    """What ran it: device, torch/CUDA/cuDNN, onnxruntime and its providers, Python."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if cfg.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(cfg.device))
        info["cudnn"] = torch.backends.cudnn.version()
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    try:
        import onnxruntime
    except ImportError:
        info["onnxruntime"] = None
    else:
        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return info


def export(cfg: Config, repo: Path) -> dict[str, Any]:
    """ResNet-18 to every format in ``FORMATS`` through modelport's own export API (parity-gated)."""
    import modelport

    started = time.perf_counter()
    report = modelport.export(
        source=build(NAME),
        repository=repo,
        name=NAME,
        formats=FORMATS,
        inputs=(modelport.TensorSpec.parse(f"x:float32:-1x3x{cfg.image}x{cfg.image}"),),
        output_names=("logits",),
        quiet=True,
    )
    rows = {row.variant: {"status": row.status, "max_abs_error": row.max_abs_error} for row in report.rows}
    if not report.ok:
        raise RuntimeError(f"export failed: {[f'{r.variant}: {r.status} {r.message}' for r in report.rows]}")
    return {"seconds": round(time.perf_counter() - started, 1), "variants": rows}


# --------------------------------------------------------------------------- in-process


def version(repo: Path, fmt: str) -> Path:
    """The exported version directory of one format."""
    return repo / f"{NAME}-{fmt}" / "1"


def median_s(call: Callable[[], object], sync: Callable[[], None], cfg: Config) -> float:
    """Median wall time of ``call`` (synchronised) after a warm-up: ``min_calls`` at least, or ``timing_s``."""
    for _ in range(cfg.warm_calls):
        call()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + cfg.timing_s
    while len(times) < cfg.min_calls or (time.perf_counter() < deadline and len(times) < 1000):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cell(batch: int, seconds: float) -> dict[str, float]:
    return {"ms": round(1e3 * seconds, 3), "items_per_s": round(batch / seconds, 1)}


def in_process(cfg: Config, directory: Path) -> dict[str, Any]:
    """Golden vectors on the device, then module-only and ``predict`` timings per batch size."""
    import torch

    from modelport.manifest import read_manifest
    from modelport.parity import verify_golden
    from modelport.runtimes import RuntimeOptions, open_runtime

    manifest = read_manifest(directory)
    runtime: Any = open_runtime(directory, manifest, RuntimeOptions(device=cfg.device, intra_op_threads=cfg.threads))
    record = verify_golden(runtime.predict, directory, manifest)
    golden = {"passed": record.passed, "max_abs_error": max(o.max_abs_error for o in record.outputs)}
    golden["tolerance"] = {"atol": record.atol, "rtol": record.rtol}
    sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    result: dict[str, Any] = {"golden": golden, "module": {}, "predict": {}}
    rng = np.random.default_rng(0)
    for batch in cfg.batches:
        x = rng.standard_normal((batch, 3, cfg.image, cfg.image), dtype=np.float32)
        on_device = torch.from_numpy(x).to(cfg.device)
        with torch.inference_mode():
            result["module"][str(batch)] = cell(batch, median_s(partial(runtime.module, on_device), sync, cfg))
        result["predict"][str(batch)] = cell(batch, median_s(partial(runtime.predict, {"x": x}), sync, cfg))
    runtime.unload()
    return result


def release_device(cfg: Config) -> None:
    """Hand the device memory this process cached back before the server takes the device."""
    if cfg.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- served


def binary_body(x: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 binary request for ``x`` (one input ``x``, binary output asked for) and its headers."""
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return header + x.astype("<f4").tobytes(), headers


def infer_once(url: str, model: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """One v2 binary inference; the first output as an array (raises on any error)."""
    body, headers = binary_body(x)
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        data = response.read()
        length = int(response.headers["Inference-Header-Content-Length"])
    output = json.loads(data[:length])["outputs"][0]
    return np.frombuffer(data[length:], "<f4").reshape(output["shape"])


def not_ready(url: str) -> dict[str, str]:
    """Model -> reason, for every exported format the server does not have ready."""
    reasons = {}
    for fmt in FORMATS:
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{NAME}-{fmt}/ready", timeout=10):
                continue
        except urllib.error.HTTPError as exc:
            reasons[fmt] = str(json.loads(exc.read() or b"{}").get("reason", f"HTTP {exc.code}"))
    return reasons


def check_served(url: str, cfg: Config, directory: Path) -> dict[str, Any]:
    """The served answer for one image against the same runtime's in-process answer on the same device."""
    from modelport.manifest import read_manifest
    from modelport.runtimes import RuntimeOptions, open_runtime

    x = np.random.default_rng(1).standard_normal((1, 3, cfg.image, cfg.image), dtype=np.float32)
    runtime = open_runtime(
        directory, read_manifest(directory), RuntimeOptions(device=cfg.device, intra_op_threads=cfg.threads)
    )
    expected = runtime.predict({"x": x})["logits"]
    runtime.unload()
    served = infer_once(url, directory.parent.name, x)
    if served.shape != expected.shape:
        return {"ok": False, "shape": list(served.shape), "expected_shape": list(expected.shape)}
    # loose: another process may pick other cuDNN (TF32) kernels; a wrong answer is off by far more
    scale = float(np.max(np.abs(expected))) or 1.0
    error = float(np.max(np.abs(served - expected)))
    return {"max_abs_error": error, "scale": scale, "ok": error <= 1e-2 * scale}


def load_levels(cfg: Config, url: str, model: str) -> dict[str, Any]:
    """Closed-loop v2 binary load of one image per request at each concurrency."""
    body, headers = binary_body(np.random.default_rng(2).standard_normal((1, 3, cfg.image, cfg.image), np.float32))
    target = f"{url}/v2/models/{model}/infer"
    lines = [f"{k}: {v}" for k, v in headers.items()]
    levels = {}
    for concurrency in cfg.concurrency:
        asyncio.run(loadgen.run(target, [body], lines, concurrency, cfg.warmup_s))
        result = asyncio.run(loadgen.run(target, [body], lines, concurrency, cfg.level_s))
        result["items_per_s"] = result["rps"]  # one item per request
        result["errors"] = result.pop("non_2xx") + result.pop("socket_errors")
        levels[str(concurrency)] = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    return levels


def serve(cfg: Config, repo: Path, golden_check: bool) -> dict[str, Any]:
    """Start the server on the device, check every format's answer, then load each one."""
    log = cfg.out / ("serve.log" if golden_check else "serve-no-golden-check.log")
    options = LaunchOptions(log=log, timeout_s=150, stop_timeout_s=20)
    flags = ["--device", cfg.device, "--intra-op-threads", str(cfg.threads), "--log-level", "warning"]
    flags.append("--golden-check" if golden_check else "--no-golden-check")
    started = time.perf_counter()
    with launched(repo, *flags, options=options) as server:
        result: dict[str, Any] = {"golden_check": golden_check, "startup_s": round(time.perf_counter() - started, 1)}
        result["not_ready"] = not_ready(server.url)
        if result["not_ready"]:
            return result
        result["check"] = {fmt: check_served(server.url, cfg, version(repo, fmt)) for fmt in FORMATS}
        result["levels"] = {fmt: load_levels(cfg, server.url, f"{NAME}-{fmt}") for fmt in FORMATS}
    result["exit_code"] = server.process.returncode
    return result


# --------------------------------------------------------------------------- report


def add_ratios(report: dict[str, Any], cfg: Config) -> None:
    """Served items/s over in-process ``predict`` items/s at the largest batch, per format and concurrency."""
    largest = str(cfg.batches[-1])
    report["meta"]["vs_inprocess"] = f"served items/s over in-process predict items/s at batch {largest}"
    for fmt, levels in report.get("serve", {}).get("levels", {}).items():
        limit = report["inprocess"][fmt]["predict"][largest]["items_per_s"]
        for level in levels.values():
            level["vs_inprocess"] = round(level["items_per_s"] / limit, 3)


def table(report: dict[str, Any], cfg: Config) -> str:
    rows = [
        f"{'format':<12} {'what':<16} {'ms (p50)':>9} {'p99 ms':>8} {'items/s':>10} {'vs b' + str(cfg.batches[-1]):>8}"
    ]
    for fmt, result in report.get("inprocess", {}).items():
        for mode in ("module", "predict"):
            for batch, c in result[mode].items():
                rows.append(f"{fmt:<12} {mode + ' b' + batch:<16} {c['ms']:>9.2f} {'':>8} {c['items_per_s']:>10.1f}")
    for fmt, levels in report.get("serve", {}).get("levels", {}).items():
        for conc, c in levels.items():
            ratio = c["vs_inprocess"]
            rows.append(
                f"{fmt:<12} {'serve c' + conc:<16} {c['p50_ms']:>9.2f} {c['p99_ms']:>8.2f} {c['items_per_s']:>10.1f} "
                f"{ratio:>7.2f}x"
            )
    return "\n".join(rows)


def problems(report: dict[str, Any]) -> list[str]:
    """Everything that makes the check fail, one line each."""
    found = [f"{phase}: {error}" for phase, error in report["errors"].items()]
    for fmt, result in report.get("inprocess", {}).items():
        if not result["golden"]["passed"]:
            found.append(f"{fmt}: golden vectors fail on {report['meta']['device']}: {result['golden']}")
    serve_first = report.get("serve_golden", {})
    found += [f"{fmt}: not ready when served: {why}" for fmt, why in serve_first.get("not_ready", {}).items()]
    served = report.get("serve", {})
    found += [f"{fmt}: served answer differs: {c}" for fmt, c in served.get("check", {}).items() if not c["ok"]]
    for fmt, levels in served.get("levels", {}).items():
        found += [f"{fmt} c{conc}: {c['errors']} failed requests" for conc, c in levels.items() if c["errors"]]
    return found


def save(report: dict[str, Any], cfg: Config) -> None:
    (cfg.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))


def phase(report: dict[str, Any], cfg: Config, name: str, work: Callable[[], Any]) -> Any:
    """Run one phase, record its result or its error, save the JSON; return the result (None on error)."""
    print(f"==> {name}", flush=True)
    started = time.perf_counter()
    try:
        report[name] = work()
    except Exception as exc:
        report["errors"][name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        return None
    finally:
        report["phase_s"][name] = round(time.perf_counter() - started, 1)
        save(report, cfg)
    return report[name]


def run(cfg: Config, work: Path) -> dict[str, Any]:
    repo = work / "repo"
    meta = {**asdict(cfg), "out": str(cfg.out), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    report: dict[str, Any] = {"meta": meta, "errors": {}, "phase_s": {}}
    phase(report, cfg, "environment", lambda: environment(cfg))
    if phase(report, cfg, "export", lambda: export(cfg, repo)) is None:
        return report
    timed = phase(report, cfg, "inprocess", lambda: {fmt: in_process(cfg, version(repo, fmt)) for fmt in FORMATS})
    release_device(cfg)
    served = phase(report, cfg, "serve", lambda: serve(cfg, repo, golden_check=True))
    if served is not None and served["not_ready"]:
        report["serve_golden"] = report.pop("serve")
        phase(report, cfg, "serve", lambda: serve(cfg, repo, golden_check=False))
    if timed is not None:
        add_ratios(report, cfg)
    return report


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelport-gpu-") as work:
        report = run(cfg, Path(work))
    report["problems"] = problems(report)
    save(report, cfg)
    print(table(report, cfg))
    for line in report["problems"]:
        print(f"FAIL {line}")
    print(f"{'FAIL' if report['problems'] else 'PASS'}: gpu check on {cfg.device}; {cfg.out / 'gpu_check.json'}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
