"""modelport edge runtime: run a modelport bundle on the device, after proving it still computes right.

One file that needs only numpy and a LiteRT interpreter (``ai_edge_litert``, else
``tflite_runtime``, else ``tensorflow.lite``); ``.ort`` variants also need onnxruntime.

    python modelport_edge.py verify BUNDLE [--variant V]
    python modelport_edge.py predict BUNDLE --input x.npy [--variant V] [--top-k 5]
    python modelport_edge.py bench BUNDLE [--runs 200] [--threads N] [--json [out.json]]

    model = EdgeModel.open("bundle", variant="float16")   # checks sha256 + golden vectors
    model.top_k(image)                                    # [[("3", 0.98), ...]]

``open`` refuses a bundle whose files do not match their sha256 or whose model does not
reproduce the expected outputs recorded in ``bundle.json`` on this device. ``bench`` runs each
variant in a fresh process: cold start (spawn -> first inference done: Python, numpy and LiteRT
imports, load, first run), golden check time, batch-1 latency p50/p90/p99, peak RSS and file size.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUNDLE_FILE",
    "BundleError",
    "EdgeInputError",
    "EdgeModel",
    "decode_array",
    "load_bundle",
    "main",
    "open_session",
    "verify_files",
]

BUNDLE_FILE = "bundle.json"
Array = np.ndarray[Any, Any]
_CHANNEL_AXIS = {"NHWC": -1, "NWC": -1, "NCHW": 1, "NCW": 1}


class BundleError(Exception):
    """A bundle that is corrupted, inconsistent, or does not reproduce its expected outputs here."""


class EdgeInputError(ValueError):
    """An input that does not match the bundle's tensor specs."""


def load_bundle(directory: str | Path) -> dict[str, Any]:
    """Read ``bundle.json``; a missing or unreadable one is a :class:`BundleError`."""
    path = Path(directory) / BUNDLE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} not found: {directory} is not a modelport bundle") from None
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}): the bundle is corrupted") from None
    if data.get("format") != "modelport-edge-bundle" or not data.get("variants"):
        raise BundleError(f"{path} is not a modelport edge bundle manifest")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(directory: str | Path, bundle: dict[str, Any], names: list[str] | None = None) -> None:
    """Check the sha256 of ``names`` (default: every file bundle.json lists)."""
    files: dict[str, str] = bundle.get("files", {})
    for name in names if names is not None else sorted(files):
        path = Path(directory) / name
        if name not in files:
            raise BundleError(f"{name} has no checksum in {BUNDLE_FILE}: the bundle is inconsistent")
        if not path.is_file():
            raise BundleError(f"{name} is missing from the bundle {directory}")
        actual = _sha256(path)
        if actual != files[name]:
            raise BundleError(
                f"{name} is corrupted: sha256 {actual[:12]}... does not match {files[name][:12]}... "
                f"recorded in {BUNDLE_FILE}; copy the bundle again"
            )


def decode_array(data: dict[str, Any]) -> Array:
    """``{"dtype", "shape", "data"}`` (as bundle.json stores tensors) -> array."""
    return np.asarray(data["data"], dtype=np.dtype(data["dtype"])).reshape(data["shape"])


def _interpreter_module() -> tuple[Any, str]:
    """The first LiteRT interpreter module available: ai_edge_litert, tflite_runtime, tensorflow.lite."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name), name.split(".")[0]
        except ImportError:
            continue
    try:
        tf: Any = importlib.import_module("tensorflow")
        return tf.lite, "tensorflow.lite"
    except ImportError:
        raise BundleError(
            "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime, or tensorflow)"
        ) from None


class _TFLiteSession:
    """One interpreter signature runner, with int8 (de)quantization from the bundle's record."""

    def __init__(self, path: Path, variant: dict[str, Any], num_threads: int | None, delegate: str | None) -> None:
        module, self.runtime = _interpreter_module()
        delegates = [module.load_delegate(delegate)] if delegate else None
        interpreter = module.Interpreter(
            model_path=str(path), num_threads=num_threads, experimental_delegates=delegates
        )
        self.runner = interpreter.get_signature_runner(variant.get("signature", "serving_default"))
        self.interpreter = interpreter
        self.quant: dict[str, dict[str, Any]] = {
            **variant.get("quantization", {}).get("inputs", {}),
            **variant.get("quantization", {}).get("outputs", {}),
        }
        self._check_quantization({**self.runner.get_input_details(), **self.runner.get_output_details()})

    def _check_quantization(self, details: dict[str, Any]) -> None:
        for native, q in self.quant.items():
            params = details[native]["quantization_parameters"]
            scales, zeros = list(params["scales"]), list(params["zero_points"])
            if scales != [q["scale"]] or zeros != [q["zero_point"]]:
                raise BundleError(
                    f"tensor {native!r}: the model's quantization (scale {scales}, zero point {zeros}) differs "
                    f"from {BUNDLE_FILE} ({q['scale']}, {q['zero_point']}): the bundle is inconsistent"
                )

    def run(self, feed: dict[str, Array]) -> dict[str, Array]:
        for native, value in feed.items():
            q = self.quant.get(native)
            if q is not None and value.dtype.kind == "f":
                info = np.iinfo(np.dtype(q["dtype"]))
                feed[native] = np.clip(np.round(value / q["scale"] + q["zero_point"]), info.min, info.max).astype(
                    q["dtype"]
                )
        result = self.runner(**feed)
        outputs = {}
        for native, value in result.items():
            q = self.quant.get(native)
            array = np.array(value)
            if q is not None:
                array = ((array.astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)
            outputs[native] = array
        return outputs


class _OrtSession:
    """An ONNX Runtime Mobile ``.ort`` file (needs onnxruntime on the device)."""

    def __init__(self, path: Path, num_threads: int | None) -> None:
        try:
            ort: Any = importlib.import_module("onnxruntime")
        except ImportError:
            raise BundleError(f"{path.name} is an ONNX Runtime model: pip install onnxruntime to run it") from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.runtime = f"onnxruntime {ort.__version__}"

    def run(self, feed: dict[str, Array]) -> dict[str, Array]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed), strict=True))


def open_session(path: Path, variant: dict[str, Any], num_threads: int | None, delegate: str | None) -> Any:
    """The interpreter of one variant entry of bundle.json (LiteRT, or onnxruntime for .ort files)."""
    if variant["runtime"] == "onnxruntime":
        return _OrtSession(path, num_threads)
    return _TFLiteSession(path, variant, num_threads, delegate)


class EdgeModel:
    """One variant of a bundle, opened on this device after its checksum and golden checks."""

    def __init__(self, directory: Path, bundle: dict[str, Any], variant: str, session: Any) -> None:
        self.directory, self.bundle, self.variant = directory, bundle, variant
        self.spec: dict[str, Any] = bundle["variants"][variant]
        self.inputs: list[dict[str, Any]] = bundle["inputs"]
        self.outputs: list[dict[str, Any]] = bundle["outputs"]
        self.labels: list[str] = bundle.get("labels", [])
        self.session = session

    @classmethod
    def open(
        cls,
        directory: str | Path,
        variant: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        verify: bool = True,
    ) -> EdgeModel:
        """Open ``variant`` (default: the bundle's default); refuse it if its files or golden outputs are wrong."""
        directory = Path(directory)
        bundle = load_bundle(directory)
        name = variant or bundle["default_variant"]
        if name not in bundle["variants"]:
            raise BundleError(f"no variant {name!r} in the bundle; it has: {', '.join(bundle['variants'])}")
        spec = bundle["variants"][name]
        if verify:
            shared = [f for f in bundle["files"] if f not in {v["file"] for v in bundle["variants"].values()}]
            verify_files(directory, bundle, [spec["file"], *shared])
        session = open_session(directory / spec["file"], spec, num_threads, delegate)
        model = cls(directory, bundle, name, session)
        if verify:
            model.check_golden()
        return model

    def check_golden(self) -> dict[str, Any]:
        """Run the golden inputs; raise :class:`BundleError` unless every output is within tolerance."""
        tol = self.spec["tolerance"]
        worst, agree, total = 0.0, 0, 0
        for index, case in enumerate(self.spec["golden"]):
            actual = self.run({k: decode_array(v) for k, v in case["inputs"].items()})
            for name, raw in case["expected"].items():
                expected, got = decode_array(raw), actual[name]
                if got.shape != expected.shape:
                    self._refuse(
                        f"output {name!r} of golden case {index} has shape {list(got.shape)}, "
                        f"expected {list(expected.shape)}"
                    )
                diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
                worst = max(worst, float(diff.max(initial=0.0)))
                if not np.all(diff <= tol["atol"] + tol["rtol"] * np.abs(expected.astype(np.float64))):
                    self._refuse(
                        f"output {name!r} of golden case {index} differs by up to {float(diff.max()):.3g} "
                        f"(allowed: atol {tol['atol']:g} + rtol {tol['rtol']:g} * |expected|)"
                    )
                if self._is_classifier(name):
                    same = np.argmax(got, axis=-1) == np.argmax(expected, axis=-1)
                    agree, total = agree + int(same.sum()), total + same.size
                    if not same.all():
                        self._refuse(f"output {name!r} of golden case {index}: top-1 class differs from expected")
        return {
            "variant": self.variant,
            "cases": len(self.spec["golden"]),
            "max_abs_error": worst,
            "top1_agreement": agree / total if total else None,
            "atol": tol["atol"],
            "rtol": tol["rtol"],
        }

    def _refuse(self, why: str) -> None:
        raise BundleError(
            f"variant {self.variant!r} ({self.spec['file']}) does not reproduce its expected outputs on this "
            f"device: {why}; refusing to run it"
        )

    def _is_classifier(self, name: str) -> bool:
        return any(o["name"] == name and o.get("classifier") for o in self.outputs)

    def run(self, inputs: dict[str, Array]) -> dict[str, Array]:
        """Model-space inputs (already normalized) -> outputs, in chunks of a fixed batch size."""
        batch = next((s["shape"][0] for s in self._variant_inputs() if s["shape"] and s["shape"][0] != -1), None)
        rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
        if batch is None or rows == batch or rows % batch:
            return self._run_once(inputs)
        parts = [self._run_once({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, rows, batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _variant_inputs(self) -> list[dict[str, Any]]:
        return list(self.spec.get("inputs", self.inputs))

    def _run_once(self, inputs: dict[str, Array]) -> dict[str, Array]:
        native = self.spec.get("native_names", {})
        feed = {native.get(k, k): np.ascontiguousarray(v) for k, v in inputs.items()}
        result = self.session.run(feed)
        return {o["name"]: result[native.get(o["name"], o["name"])] for o in self.outputs}

    def predict(self, inputs: Array | dict[str, Array]) -> dict[str, Array]:
        """Check, normalize (mean/std from the bundle) and run; one array is enough for one-input models."""
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                raise EdgeInputError(f"the model has {len(self.inputs)} inputs: pass a dict keyed by input name")
            inputs = {self.inputs[0]["name"]: inputs}
        unknown = sorted(set(inputs) - {s["name"] for s in self.inputs})
        if unknown:
            raise EdgeInputError(f"unknown input {unknown[0]!r}; the model takes {[s['name'] for s in self.inputs]}")
        return self.run({s["name"]: _prepare(s, inputs) for s in self.inputs})

    def top_k(self, inputs: Array | dict[str, Array], k: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the ``k`` best classes of the first classifier output as (label, score)."""
        name = next((o["name"] for o in self.outputs if o.get("classifier")), None)
        if name is None:
            raise EdgeInputError("the model has no classifier output ([batch, classes])")
        scores = self.predict(inputs)[name]
        best = np.argsort(-scores, axis=-1)[:, :k]
        labels = self.labels or [str(i) for i in range(scores.shape[-1])]
        return [[(labels[int(c)], float(row[c])) for c in order] for row, order in zip(scores, best, strict=True)]


def _prepare(spec: dict[str, Any], inputs: dict[str, Any]) -> Array:
    name, shape = spec["name"], spec["shape"]
    if name not in inputs:
        raise EdgeInputError(f"missing input {name!r} ({spec['dtype']} {shape})")
    value = np.asarray(inputs[name])
    dtype = np.dtype(spec["dtype"])
    if value.dtype.kind not in "biuf" or (dtype.kind in "iu" and value.dtype.kind == "f"):
        raise EdgeInputError(f"input {name!r} has dtype {value.dtype}, expected {dtype}")
    if value.ndim == len(shape) - 1:  # one sample without its batch dimension
        value = value[None]
    fixed = [(i, d) for i, d in enumerate(shape) if d != -1]
    if value.ndim != len(shape) or any(value.shape[i] != d for i, d in fixed if i > 0):
        raise EdgeInputError(f"input {name!r} has shape {list(value.shape)}, expected {shape} (-1 = any)")
    if spec.get("mean") is not None:
        value = _normalize(value.astype(np.float32), spec)
    return value.astype(dtype, copy=False)


def _normalize(value: Array, spec: dict[str, Any]) -> Array:
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    if mean.size > 1:
        axis = _CHANNEL_AXIS.get(spec.get("layout") or "", -1)
        view = [1] * value.ndim
        view[axis] = mean.size
        mean, std = mean.reshape(view), std.reshape(view)
    return (value - mean) / std


# ---- command line -------------------------------------------------------------------------------------------


def _variants(bundle: dict[str, Any], wanted: str | None) -> list[str]:
    if wanted:
        for name in wanted.split(","):
            if name not in bundle["variants"]:
                raise BundleError(f"no variant {name!r} in the bundle; it has: {', '.join(bundle['variants'])}")
        return wanted.split(",")
    return list(bundle["variants"])


def _unavailable(bundle: dict[str, Any], name: str) -> str | None:
    """Why a variant cannot run here (an .ort file without onnxruntime), or None."""
    if bundle["variants"][name]["runtime"] != "onnxruntime":
        return None
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return "onnxruntime is not installed (its sha256 was checked)"
    return None


def _verify(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    verify_files(args.bundle, bundle)
    print(f"{args.bundle}: {len(bundle['files'])} files match their sha256")
    for name in _variants(bundle, args.variant):
        reason = _unavailable(bundle, name)
        if reason:
            print(f"  {name:14s} not run: {reason}")
            continue
        model = EdgeModel.open(args.bundle, name, num_threads=args.threads, verify=False)
        result = model.check_golden()
        agree = result["top1_agreement"]
        print(
            f"  {name:14s} {model.session.runtime:18s} {result['cases']} golden cases, max abs error "
            f"{result['max_abs_error']:.2e} (atol {result['atol']:g}, rtol {result['rtol']:g})"
            + ("" if agree is None else f", top-1 agreement {100 * agree:.0f}%")
            + "  OK"
        )
    print(f"verified: {bundle['name']} reproduces its expected outputs on this device")
    return 0


def _predict(args: argparse.Namespace) -> int:
    model = EdgeModel.open(args.bundle, args.variant, num_threads=args.threads)
    data = np.load(args.input, allow_pickle=False)
    inputs = {k: data[k] for k in data.files} if hasattr(data, "files") else data
    if any(o.get("classifier") for o in model.outputs):
        for row, best in enumerate(model.top_k(inputs, args.top_k)):
            print(f"{row}: " + ", ".join(f"{label} ({score:.3f})" for label, score in best))
    else:
        for name, value in model.predict(inputs).items():
            print(f"{name}: {value.tolist()}")
    return 0


def _bench_child(args: argparse.Namespace) -> int:
    """One variant in a fresh process: import, load, verify and latency, then peak RSS."""
    started = time.perf_counter()
    _interpreter_module()
    imported = time.perf_counter()
    model = EdgeModel.open(args.bundle, args.variant, num_threads=args.threads, verify=False)
    case = model.spec["golden"][0]["inputs"]
    inputs = {k: decode_array(v)[:1] for k, v in case.items()}
    model.run(inputs)
    loaded = time.perf_counter()
    model.check_golden()
    verified = time.perf_counter()
    for _ in range(min(10, args.runs)):
        model.run(inputs)
    times = []
    for _ in range(args.runs):
        tick = time.perf_counter()
        model.run(inputs)
        times.append(time.perf_counter() - tick)
    p50, p90, p99 = (float(np.percentile(times, q)) * 1e3 for q in (50, 90, 99))
    result = {
        "variant": args.variant,
        "runtime": model.session.runtime,
        "size_bytes": (Path(args.bundle) / model.spec["file"]).stat().st_size,
        "import_ms": (imported - started) * 1e3,
        "load_ms": (loaded - imported) * 1e3,
        "ready_at": time.time() - (time.perf_counter() - loaded),
        "verify_ms": (verified - loaded) * 1e3,
        "runs": args.runs,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "peak_rss_mb": _peak_rss_mb(),
    }
    print(json.dumps(result))
    return 0


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _bench(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    verify_files(args.bundle, bundle)
    results, failed = [], False
    for name in _variants(bundle, args.variant):
        if _unavailable(bundle, name):
            print(f"{name}: not benchmarked: {_unavailable(bundle, name)}", file=sys.stderr)
            continue
        command = [sys.executable, os.path.abspath(__file__), "_bench-child", str(args.bundle), "--variant", name]
        command += ["--runs", str(args.runs)] + (["--threads", str(args.threads)] if args.threads else [])
        spawned = time.time()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(
                f"{name}: not benchmarked: {(done.stderr.strip().splitlines() or ['no output'])[-1]}", file=sys.stderr
            )
            failed = True
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        # cold start: process spawn -> first inference done (python, numpy and LiteRT imports, load, first run)
        result["cold_start_ms"] = (result.pop("ready_at") - spawned) * 1e3
        results.append(result)
    import platform

    report = {
        "bundle": bundle["name"],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": args.threads,
        "variants": results,
    }
    text = json.dumps(report, indent=2)
    print(text if args.json == "-" else _bench_table(report))  # --json alone: JSON only, for a pipe
    if args.json not in (None, "-"):
        Path(args.json).write_text(text + "\n")
    return 1 if failed else 0


def _bench_table(report: dict[str, Any]) -> str:
    head = (
        "variant",
        "runtime",
        "size",
        "cold start",
        "(runtime import+load)",
        "verify",
        "p50",
        "p90",
        "p99",
        "peak RSS",
    )
    rows = [head]
    for r in report["variants"]:
        rows.append(
            (
                r["variant"],
                r["runtime"],
                f"{r['size_bytes'] / 1024:.1f} KB",
                f"{r['cold_start_ms']:.0f} ms",
                f"({r['import_ms']:.0f}+{r['load_ms']:.0f})",
                f"{r['verify_ms']:.1f} ms",
                f"{r['p50_ms']:.3f} ms",
                f"{r['p90_ms']:.3f} ms",
                f"{r['p99_ms']:.3f} ms",
                f"{r['peak_rss_mb']:.0f} MB",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{report['bundle']} on {report['machine']} (python {report['python']}, numpy {report['numpy']}), "
    title += f"latency of batch 1 over {report['variants'][0]['runs'] if report['variants'] else 0} runs"
    return "\n".join([title, *lines])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelport_edge.py", description="Verify, run and benchmark a bundle.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, help_text in (
        ("verify", _verify, "check every file's sha256 and every variant's golden outputs"),
        ("predict", _predict, "run an .npy/.npz input (top-k with labels for classifiers)"),
        ("bench", _bench, "cold start, latency p50/p90/p99, peak RSS and size per variant"),
        ("_bench-child", _bench_child, argparse.SUPPRESS),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("bundle", type=Path, help="the bundle directory (holds bundle.json)")
        p.add_argument("--variant", help="variant name (comma list for verify/bench; default: all / the default)")
        p.add_argument("--threads", type=int, help="interpreter threads (default: the runtime's)")
        p.set_defaults(run=run)
        if name == "predict":
            p.add_argument("--input", required=True, type=Path, help=".npy (one input) or .npz keyed by input name")
            p.add_argument("--top-k", type=int, default=5)
        if name in ("bench", "_bench-child"):
            p.add_argument("--runs", type=int, default=200, help="timed runs per variant (default 200)")
        if name == "bench":
            p.add_argument(
                "--json",
                nargs="?",
                const="-",
                metavar="FILE",
                help="print the results as JSON instead of the table; with FILE, write them there beside the table",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; a refused bundle prints one line and exits 1, bad input exits 2."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except BundleError as exc:
        print(f"modelport_edge {args.command}: REFUSED: {exc}", file=sys.stderr)
        return 1
    except (EdgeInputError, OSError, ValueError) as exc:
        print(f"modelport_edge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
