"""modelport edge runtime: run a modelport bundle on the device, after proving it still computes right.

One file that needs only numpy and a LiteRT interpreter (``ai_edge_litert``, else
``tflite_runtime``, else ``tensorflow.lite``); ``.ort`` variants also need onnxruntime. Pillow is
optional: it is needed only to decode images (``classify_image``, ``predict --image``, the raw samples);
so is Hugging Face ``tokenizers``, needed only for text (``classify_text``, ``predict --text``).

    python modelport_edge.py verify BUNDLE [--variant V]
    python modelport_edge.py predict BUNDLE --input x.npy [--variant V] [--top-k 5]
    python modelport_edge.py predict BUNDLE --image x.jpg [--variant V] [-k 5]
    python modelport_edge.py predict BUNDLE --text "some words" [--variant V] [-k 5]
    python modelport_edge.py bench BUNDLE [--runs 200] [--threads N] [--json [out.json]]

    model = EdgeModel.open("bundle", variant="float16")   # checks sha256, golden vectors and raw samples
    model.top_k(image)                                    # [[("3", 0.98), ...]]
    model.classify_image("digit.png")                     # {"3": 0.98, "8": 0.01, "5": 0.003}: the top-k step
    model.classify_text("the cat sat", k=2)               # {"positive": 0.7, "neutral": 0.2}

The image, text and postprocessing steps come from ``bundle.json`` (``processing``), written by the server's
processors (``modelport.processing``); the functions below repeat their arithmetic step for step, and
a test compares the two on many images so they cannot drift.

``open`` refuses a bundle whose files do not match their sha256 or whose model does not
reproduce the expected outputs recorded in ``bundle.json`` on this device. ``bench`` runs each
variant in a fresh process: cold start (spawn -> first inference done: Python, numpy and LiteRT
imports, load, first run), golden check time, batch-1 latency p50/p90/p99, peak RSS and file size.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

__all__ = [
    "BUNDLE_FILE",
    "BundleError",
    "EdgeInputError",
    "EdgeModel",
    "MissingPillowError",
    "MissingTokenizersError",
    "channel_axis",
    "content_digest",
    "decode_array",
    "encode_array",
    "has_pillow",
    "has_tokenizers",
    "load_bundle",
    "load_tokenizer",
    "main",
    "open_session",
    "postprocess",
    "preprocess_image",
    "preprocess_text",
    "verify_content",
    "verify_files",
]

BUNDLE_FILE = "bundle.json"
CONTENT_KEY = "content_sha256"  # bundle.json's own checksum: the files list cannot hold it
Array = np.ndarray[Any, Any]


def channel_axis(layout: str | None, rank: int) -> int:
    """The channel axis of a tensor of ``rank`` in ``layout``, which counts the batch dimension: ``NCHW`` is
    axis 1 of ``1x3x224x224`` but axis 0 of ``3x224x224`` (a model without one); the last axis otherwise."""
    if layout not in ("NCHW", "NCW"):
        return -1
    return max(0, 1 - (len(layout) - rank))


class BundleError(Exception):
    """A bundle that is corrupted, inconsistent, or does not reproduce its expected outputs here."""


class EdgeInputError(ValueError):
    """An input that does not match the bundle's tensor specs."""


class MissingPillowError(ImportError):
    """Images need Pillow, which this device does not have."""


class MissingTokenizersError(ImportError):
    """Text needs Hugging Face ``tokenizers``, which this device does not have."""


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


def content_digest(bundle: dict[str, Any]) -> str:
    """sha256 of bundle.json's content (every key but its own digest), independent of its formatting."""
    content = {k: v for k, v in bundle.items() if k != CONTENT_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_content(bundle: dict[str, Any]) -> None:
    """Refuse a bundle.json edited after it was built: its normalization, labels, processing and tolerances
    are what every golden check trusts (a bundle built before the digest existed has none to check)."""
    recorded = bundle.get(CONTENT_KEY)
    if recorded is not None and content_digest(bundle) != recorded:
        raise BundleError(
            f"{BUNDLE_FILE} was edited after the bundle was built: its content does not match its sha256 "
            f"{str(recorded)[:12]}... (normalization, labels, processing and tolerances cannot be trusted); "
            "copy the bundle again or rebuild it with modelport bundle"
        )


def decode_array(data: dict[str, Any]) -> Array:
    """``{"dtype", "shape", "data"}`` (as bundle.json stores tensors) -> array; a ``string`` tensor's data are
    its elements' bytes in base64 (an object array of bytes, as LiteRT takes and returns strings)."""
    if data["dtype"] == "string":
        return np.array([base64.b64decode(v) for v in data["data"]], dtype=object).reshape(data["shape"])
    return np.asarray(data["data"], dtype=np.dtype(data["dtype"])).reshape(data["shape"])


def encode_array(value: Array) -> dict[str, Any]:
    """An array -> ``{"dtype", "shape", "data"}`` (JSON): strings (object, bytes or str arrays) as ``string``."""
    if value.dtype.kind in "OSU":
        data = [base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode() for v in value.ravel()]
        return {"dtype": "string", "shape": list(value.shape), "data": data}
    return {"dtype": value.dtype.name, "shape": list(value.shape), "data": value.ravel().tolist()}


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
            scales, zeros = [float(s) for s in params["scales"]], [int(z) for z in params["zero_points"]]
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
        self._tokenizer: Any = None

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
            if model.bundle.get("samples") and model.can_decode():
                model.check_samples()
            verify_content(bundle)  # last: a check above names what an edit broke more precisely
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

    def _refuse(self, why: str) -> NoReturn:
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

    @property
    def batched(self) -> bool:
        """Whether the model has a batch dimension (``max_batch_size`` 0 in bundle.json: it has none)."""
        return bool(self.bundle.get("max_batch_size", 1))

    def _as_model_takes(self, tensors: dict[str, Array]) -> dict[str, Array]:
        """Processed tensors (one item, batch dimension of 1) for a model without a batch dimension lose it where
        the model's input has one dimension less (``3x224x224``; ``1x3x224x224`` keeps it), as on the server."""
        if self.batched:
            return tensors
        ranks = {s["name"]: len(s["shape"]) for s in self._variant_inputs()}
        return {
            name: value[0] if name in ranks and value.ndim == ranks[name] + 1 and len(value) == 1 else value
            for name, value in tensors.items()
        }

    def _run_once(self, inputs: dict[str, Array]) -> dict[str, Array]:
        self._check_shapes(inputs)
        native = self.spec.get("native_names", {})
        feed = {native.get(k, k): np.ascontiguousarray(v) for k, v in inputs.items()}
        result = self.session.run(feed)
        return {o["name"]: _as_declared(result[native.get(o["name"], o["name"])], o["dtype"]) for o in self.outputs}

    def _check_shapes(self, inputs: dict[str, Array]) -> None:
        """Refuse a tensor of another shape than this variant takes: LiteRT's signature runner would
        silently resize the model's input to it and compute something else (an NHWC image in an NCHW model)."""
        for spec in self._variant_inputs():
            value, shape = inputs.get(spec["name"]), spec["shape"]
            if value is None:
                raise EdgeInputError(f"missing input {spec['name']!r} ({spec['dtype']} {shape})")
            if value.ndim != len(shape) or any(d not in (-1, n) for d, n in zip(shape, value.shape, strict=False)):
                raise EdgeInputError(
                    f"input {spec['name']!r} has shape {list(value.shape)}, but variant {self.variant!r} takes "
                    f"{shape} (-1 = any)"
                )

    def predict(self, inputs: Array | dict[str, Array]) -> dict[str, Array]:
        """Check, normalize (mean/std from the bundle) and run; one array is enough for one-input models."""
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                raise EdgeInputError(
                    f"the model has {len(self.inputs)} inputs ({', '.join(s['name'] for s in self.inputs)}): pass a "
                    "dict keyed by input name (on the command line, an .npz)"
                )
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
        scores = scores if self.batched else scores.reshape(1, -1)  # [classes]: a model without a batch dimension
        best = np.argsort(-scores, axis=-1)[:, :k]
        labels = self.labels or [str(i) for i in range(scores.shape[-1])]
        return [[(labels[int(c)], float(row[c])) for c in order] for row, order in zip(scores, best, strict=True)]

    def _step(self, section: str, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        steps = self.bundle.get("processing", {}).get(section, [])
        return next((s for s in steps if s.get("kind") in kinds), None)

    @property
    def image_step(self) -> dict[str, Any] | None:
        """The bundle's image step (how an image file becomes the model's input), if it has one."""
        return self._step("pre", ("image",))

    def preprocess_image(self, image: bytes | str | Path) -> dict[str, Array]:
        """An image file or its bytes -> the model's input tensors (batch of 1, none for a model without one)."""
        step = self.image_step
        if step is None:
            raise EdgeInputError(
                "the bundle's processing takes text, not images: classify_text() (predict --text)"
                if self.text_step is not None
                else "the bundle has no image processing (bundle it with processors: an image step); "
                "pass tensors to predict() instead (on the command line: predict --input x.npy)"
            )
        return self._as_model_takes(preprocess_image(image, step))

    @property
    def text_step(self) -> dict[str, Any] | None:
        """The bundle's text step (how a text becomes token ids and masks), if it has one."""
        return self._step("pre", ("text",))

    def preprocess_text(self, text: str | bytes) -> dict[str, Array]:
        """A text (str or UTF-8 bytes) -> the model's input tensors (batch of 1, none for a model without one).
        Needs ``tokenizers``."""
        step = self.text_step
        if step is None:
            raise EdgeInputError(
                "the bundle's processing takes images, not text: classify_image() (predict --image)"
                if self.image_step is not None
                else "the bundle has no text processing (bundle it with processors: a text step); "
                "pass token ids to predict() instead (on the command line: predict --input ids.npz)"
            )
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.directory / step["tokenizer"], step)
        dtypes = {spec["name"]: spec["dtype"] for spec in self.inputs}
        return self._as_model_takes(preprocess_text(text, step, self._tokenizer, dtypes))

    def preprocess(self, raw: bytes) -> dict[str, Array]:
        """A raw input file's bytes -> model tensors through the bundle's image or text step."""
        return self.preprocess_text(raw) if self.text_step is not None else self.preprocess_image(raw)

    def can_decode(self) -> bool:
        """Whether this device has what the bundle's raw inputs need (Pillow for images, tokenizers for text)."""
        return has_tokenizers() if self.text_step is not None else has_pillow()

    def answer(self, outputs: dict[str, Array], k: int | None = None) -> object:
        """Model outputs of one image -> the server's response (its topk/argmax/threshold step)."""
        step = self._step("post", ("topk", "argmax", "threshold")) or _DEFAULT_POST
        name: str | None = step.get("output") or next((o["name"] for o in self.outputs if o.get("classifier")), None)
        if name is None:
            raise EdgeInputError("the model has no classifier output ([batch, classes])")
        return postprocess(outputs[name], step, self.labels, k)

    def classify_image(self, image: bytes | str | Path, k: int | None = None) -> object:
        """Decode -> resize/crop/normalize -> model -> labels, as the server answers the same image.

        ``k`` overrides the top-k step's (default ``None``: the bundle's, the server's answer). Needs Pillow."""
        return self.answer(self.run(self.preprocess_image(image)), k)

    def classify_text(self, text: str | bytes, k: int | None = None) -> object:
        """Tokenize -> model -> labels, as the server answers the same text.

        ``k`` overrides the top-k step's (default ``None``: the bundle's, the server's answer). Needs ``tokenizers``."""
        return self.answer(self.run(self.preprocess_text(text)), k)

    def check_samples(self) -> dict[str, Any]:
        """Run the bundled raw samples through this device's processing and the model; raise
        :class:`BundleError` unless each answer is within this variant's tolerance of the server's."""
        samples: list[dict[str, Any]] = self.bundle.get("samples", [])
        expected_all: list[dict[str, Any]] = self.spec.get("samples", [])
        if len(expected_all) != len(samples):
            raise BundleError(
                f"variant {self.variant!r} records {len(expected_all)} raw-sample answers for {len(samples)} "
                f"samples in {BUNDLE_FILE}: the bundle is inconsistent"
            )
        tol, kind = self.spec["tolerance"], "text" if self.text_step else "image"
        worst, agree = 0.0, 0
        for sample, expected in zip(samples, expected_all, strict=True):
            try:
                outputs = self.run(self.preprocess((self.directory / sample["file"]).read_bytes()))
            except EdgeInputError as exc:
                self._refuse(
                    f"raw sample {sample['file']}: this device's {kind} processing does not match the server's: {exc}"
                )
            for name, raw in expected.items():
                want, got = decode_array(raw).astype(np.float64), outputs[name].astype(np.float64)
                diff = np.abs(got - want) if got.shape == want.shape else np.asarray([np.inf])
                worst = max(worst, float(diff.max(initial=0.0)))
                if not np.all(diff <= tol["atol"] + tol["rtol"] * np.abs(want)):
                    self._refuse(
                        f"raw sample {sample['file']}: output {name!r} differs from the server's by up to "
                        f"{float(diff.max()):.3g} (allowed: atol {tol['atol']:g} + rtol {tol['rtol']:g} * |expected|)"
                        f" - this device's {kind} processing does not match the server's"
                    )
                if self._is_classifier(name) and int(np.argmax(got)) != int(np.argmax(want)):
                    self._refuse(f"raw sample {sample['file']}: top-1 class differs from the server's")
            top = next(iter(_as_dict(self.answer(outputs, 1))), None)
            agree += top == next(iter(_as_dict(sample.get("response"))), top)
        return {"samples": len(samples), "max_abs_error": worst, "server_top1": agree}


_INTEGERS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def _as_declared(value: Array, dtype: str) -> Array:
    """An integer result LiteRT computed narrower than the bundle declares (int32 for int64) in the declared dtype,
    as the server answers it."""
    if value.dtype.kind in "iu" and dtype in _INTEGERS and value.dtype != np.dtype(dtype):
        return value.astype(dtype) if np.can_cast(value.dtype, dtype, "safe") else value
    return value


def _prepare(spec: dict[str, Any], inputs: dict[str, Any]) -> Array:
    name, shape = spec["name"], spec["shape"]
    if name not in inputs:
        raise EdgeInputError(f"missing input {name!r} ({spec['dtype']} {shape})")
    value = np.asarray(inputs[name])
    if spec["dtype"] == "string":
        return _prepare_strings(name, value, shape)
    dtype = np.dtype(spec["dtype"])
    if value.dtype.kind not in "biuf" or (dtype.kind in "iu" and value.dtype.kind == "f"):
        raise EdgeInputError(f"input {name!r} has dtype {value.dtype}, expected {dtype}")
    if value.ndim == len(shape) - 1:  # one sample without its batch dimension
        value = value[None]
    fixed = [(i, d) for i, d in enumerate(shape) if d != -1]
    if value.ndim != len(shape) or any(value.shape[i] != d for i, d in fixed if i > 0):
        raise EdgeInputError(f"input {name!r} has shape {list(value.shape)}, expected {shape} (-1 = any)")
    if spec.get("value_range") and dtype.kind in "iu":
        _check_range(name, value, spec["value_range"])
    if spec.get("mean") is not None:
        value = _normalize(value.astype(np.float32), spec)
    return value.astype(dtype, copy=False)


def _prepare_strings(name: str, value: Array, shape: list[int]) -> Array:
    """A string input: str or bytes elements -> an object array of UTF-8 bytes (LiteRT's string tensors)."""
    if value.dtype.kind not in "OSU" or not all(isinstance(v, (bytes, str)) for v in value.ravel()):
        raise EdgeInputError(f"input {name!r} has dtype {value.dtype}, expected strings (str or bytes)")
    if value.ndim == len(shape) - 1:
        value = value[None]
    if value.ndim != len(shape) or any(value.shape[i] != d for i, d in enumerate(shape) if d != -1 and i > 0):
        raise EdgeInputError(f"input {name!r} has shape {list(value.shape)}, expected {shape} (-1 = any)")
    encoded = [v if isinstance(v, bytes) else str(v).encode() for v in value.ravel()]
    return np.array(encoded, dtype=object).reshape(value.shape)


def _check_range(name: str, value: Array, value_range: list[float]) -> None:
    """An integer input's domain, as the server enforces it: ``LOW <= v < HIGH`` (token ids of a table of
    HIGH rows); LiteRT would fail in C++ ("index out of bounds") or read past the embedding."""
    low, high = (math.ceil(b) if math.isfinite(b) else b for b in value_range)
    inside = (value >= low) & (value < high)
    if not inside.all():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmin(inside)), value.shape))
        raise EdgeInputError(
            f"input {name!r}: value {value[index].item()} at index {list(index)} is outside the model's value "
            f"range ({low} <= value < {high})"
        )


def _normalize(value: Array, spec: dict[str, Any]) -> Array:
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    if mean.size > 1:
        axis = channel_axis(spec.get("layout"), value.ndim)
        view = [1] * value.ndim
        view[axis] = mean.size
        mean, std = mean.reshape(view), std.reshape(view)
    return (value - mean) / std


# ---- images and labels (the same arithmetic as modelport.processing.image and .postprocess) ------------------

_PILLOW_HINT = (
    "decoding images needs Pillow: pip install pillow "
    "(without it, predict --input .npy/.npz and the numeric golden checks still work)"
)


def _pillow() -> tuple[Any, Any]:
    try:
        image: Any = importlib.import_module("PIL.Image")
        ops: Any = importlib.import_module("PIL.ImageOps")
    except ImportError:
        raise MissingPillowError(_PILLOW_HINT) from None
    return image, ops


def has_pillow() -> bool:
    """Whether images can be decoded here."""
    try:
        _pillow()
    except MissingPillowError:
        return False
    return True


def _open_image(data: bytes, step: dict[str, Any], image_module: Any, encoded: bool = False) -> Any:
    """The image's header, in the step's formats; an image's base64 text is read as the image, as the server reads
    it (TorchServe's vision handlers take ``{"data": "<base64>"}``)."""
    try:
        return image_module.open(io.BytesIO(data), formats=list(step["formats"]))
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, a bad header
        unidentified = type(exc).__name__ == "UnidentifiedImageError"
        decoded = _base64_text(data) if unidentified and not encoded else None
        if decoded is not None:
            return _open_image(decoded, step, image_module, encoded=True)
        # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" adds nothing but an address
        detail = ", nor the base64 text of one" if encoded else "" if unidentified else f": {exc}"
        raise EdgeInputError(f"not an image in an accepted format ({', '.join(step['formats'])}){detail}") from None


def _base64_text(data: bytes) -> bytes | None:
    """``data`` decoded when it is base64 text (standard alphabet, padded; surrounding whitespace allowed)."""
    text = data.strip()
    if not text or len(text) % 4 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error
        return None


_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def _decode(data: bytes, step: dict[str, Any]) -> Any:
    """Bytes -> a loaded PIL image in the step's colour mode (first frame, EXIF orientation applied)."""
    image_module, ops = _pillow()
    if not data:
        raise EdgeInputError("empty image (0 bytes)")
    if len(data) > step["max_bytes"]:
        raise EdgeInputError(f"image of {len(data)} bytes is over the limit of {step['max_bytes']}")
    image = _open_image(data, step, image_module)
    width, height = image.size
    if width * height > step["max_pixels"]:
        raise EdgeInputError(f"image of {width}x{height} pixels is over the limit of {step['max_pixels']} pixels")
    try:
        image.load()
        if step["exif_transpose"]:
            image = ops.exif_transpose(image)
        return image if image.mode == step["mode"] else image.convert(step["mode"])
    except Exception as exc:
        raise EdgeInputError(f"cannot decode the image ({exc})") from None


def _resize(image: Any, size: int | list[int], interpolation: str) -> Any:
    """``transforms.Resize``: an int sets the shorter side (the longer one truncated), ``[h, w]`` both."""
    width, height = image.size
    if isinstance(size, int):
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:
        new_h, new_w = size
    if (new_w, new_h) == (width, height):
        return image
    image_module, _ = _pillow()
    return image.resize((new_w, new_h), getattr(image_module.Resampling, interpolation.upper()))


def _center_crop(image: Any, size: int | list[int]) -> Any:
    """``transforms.CenterCrop``: zero padding where the image is smaller, then the centred box."""
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    width, height = image.size
    if crop_w > width or crop_h > height:
        _, ops = _pillow()
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        bands = len(image.getbands())
        border = (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2)
        image = ops.expand(image, border=border, fill=(0,) * bands if bands > 1 else 0)
        width, height = image.size
        if (crop_w, crop_h) == (width, height):
            return image
    top, left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)
    return image.crop((left, top, left + crop_w, top + crop_h))


def _to_array(image: Any, step: dict[str, Any]) -> Array:
    """Pixels * scale (rounded once to float32), then (x - mean) / std in float32, HWC."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    values: Array = (pixels.astype(np.float64) * step["scale"]).astype(np.float32)
    if step.get("mean") is None or step.get("std") is None:
        return values
    normalized: Array = np.subtract(values, np.asarray(step["mean"], np.float32))
    normalized /= np.asarray(step["std"], np.float32)
    return normalized


def preprocess_image(data: bytes | str | Path, step: dict[str, Any]) -> dict[str, Array]:
    """An image file or its bytes -> ``{input: (1, C, H, W) or (1, H, W, C)}``, as the server's image step."""
    raw = Path(data).read_bytes() if isinstance(data, str | Path) else bytes(data)
    image = _decode(raw, step)
    if step.get("resize") is not None:
        image = _resize(image, step["resize"], step["interpolation"])
    if step.get("center_crop") is not None:
        image = _center_crop(image, step["center_crop"])
    values = _to_array(image, step)
    if step["layout"] == "NCHW":
        values = values.transpose(2, 0, 1)
    return {step["input"]: np.ascontiguousarray(values[None], dtype=np.dtype(step["dtype"]))}


# ---- text (the same steps as modelport.processing.text) ------------------------------------------------------

_TOKENIZERS_HINT = (
    "text needs Hugging Face tokenizers: pip install tokenizers "
    "(without it, predict --input .npy/.npz and the numeric golden checks still work)"
)


def _tokenizer_class() -> Any:
    try:
        module: Any = importlib.import_module("tokenizers")
    except ImportError:
        raise MissingTokenizersError(_TOKENIZERS_HINT) from None
    return module.Tokenizer


def has_tokenizers() -> bool:
    """Whether texts can be tokenized here."""
    try:
        _tokenizer_class()
    except MissingTokenizersError:
        return False
    return True


def load_tokenizer(path: Path, step: dict[str, Any]) -> Any:
    """The bundle's ``tokenizer.json`` with the step's truncation and no padding of its own."""
    tokenizer = _tokenizer_class().from_file(str(path))
    tokenizer.no_padding()
    if step["truncation"]:
        tokenizer.enable_truncation(step["max_length"])
    else:
        tokenizer.no_truncation()
    return tokenizer


def _text(text: str | bytes) -> str:
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EdgeInputError(f"text is not valid UTF-8 (at byte {exc.start})") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EdgeInputError(f"text is not valid Unicode (at {exc.start})") from None
    return text


def preprocess_text(
    text: str | bytes, step: dict[str, Any], tokenizer: Any, dtypes: dict[str, str] | None = None
) -> dict[str, Array]:
    """One text -> ``{input_ids, attention_mask, ...}`` of shape (1, width), as the server's text step
    (``tokenizer`` from :func:`load_tokenizer`; padding ``longest`` pads a single text to its own length).
    Without the step's ``dtype``, each tensor takes its model input's int32/int64 in ``dtypes``, else int64."""
    encoding = tokenizer.encode(_text(text), add_special_tokens=step["add_special_tokens"])
    ids, limit = list(encoding.ids), step["max_length"]
    if len(ids) > limit:
        raise EdgeInputError(f"text is {len(ids)} tokens, over the limit of {limit} (truncation is off)")
    pad = (limit if step["padding"] == "max_length" else len(ids)) - len(ids)
    values = {
        "input_ids": ids + [step["pad_id"]] * pad,
        "attention_mask": list(encoding.attention_mask) + [0] * pad,
        "token_type_ids": list(encoding.type_ids) + [0] * pad,
    }

    def dtype(name: str) -> str:
        declared = (dtypes or {}).get(name)
        return str(step["dtype"] or (declared if declared in ("int32", "int64") else "int64"))

    made = {step[field]: row for field, row in values.items() if step.get(field)}
    return {name: np.asarray([row], dtype=dtype(name)) for name, row in made.items()}


def _activate(scores: Array, activation: str) -> Array:
    values = scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float32)
    if activation == "softmax":
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-values))
    return values


def postprocess(scores: Array, step: dict[str, Any], labels: list[str], k: int | None = None) -> object:
    """One row of class scores -> the server's response: ``topk`` / ``threshold`` ``{label: score}``
    best first, ``argmax`` ``{"label", "index", "score"}``; ``k`` overrides the step's."""
    values = _activate(scores.reshape(-1), step.get("activation", "none"))

    def name(index: int) -> str:
        return labels[index] if index < len(labels) else str(index)

    ranked = [int(i) for i in np.argsort(-values, kind="stable")]
    if step["kind"] == "argmax":
        best = int(np.argmax(values))
        return {"label": name(best), "index": best, "score": float(values[best])}
    if step["kind"] == "threshold":
        return {name(i): float(values[i]) for i in ranked if values[i] >= step["threshold"]}
    top = k if k is not None else step.get("k")
    if top is None:
        return {name(i): float(s) for i, s in enumerate(values)}
    return {name(i): float(values[i]) for i in ranked[:top]}


_DEFAULT_POST: dict[str, Any] = {"kind": "topk", "k": 5, "activation": "none", "output": None}


def _as_dict(response: object) -> dict[str, Any]:
    """A top-1 response as ``{label: ...}`` (argmax's ``{"label": name}`` included); nothing for the tensors a
    model without a postprocessing step answers (``{output: [[...]]}``)."""
    if isinstance(response, dict) and "label" in response and "index" in response:
        return {response["label"]: response.get("score")}
    labelled = isinstance(response, dict) and not any(isinstance(v, list) for v in response.values())
    return response if labelled and isinstance(response, dict) else {}


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
        _verify_samples(model)
    verify_content(bundle)
    print(f"verified: {bundle['name']} reproduces its expected outputs on this device")
    return 0


def _verify_samples(model: EdgeModel) -> None:
    """The raw samples through this device's processing; skipped, with a note, without Pillow/tokenizers."""
    if not model.bundle.get("samples"):
        return
    if not model.can_decode():
        what, package = ("text samples", "tokenizers") if model.text_step else ("raw samples", "Pillow")
        print(f"  {'':14s} {what} not checked: {package} is not installed (pip install {package.lower()})")
        return
    result = model.check_samples()
    print(
        f"  {'':14s} {result['samples']} raw samples (decode -> label on this device), max abs error "
        f"{result['max_abs_error']:.2e}, top-1 as the server answered: {result['server_top1']}/{result['samples']}  OK"
    )


def _predict(args: argparse.Namespace) -> int:
    model = EdgeModel.open(args.bundle, args.variant, num_threads=args.threads)
    if args.image is not None:
        print(json.dumps(model.classify_image(args.image, args.top_k)))
        return 0
    if args.text is not None:
        print(json.dumps(model.classify_text(args.text, args.top_k)))
        return 0
    data = np.load(args.input, allow_pickle=False)
    inputs = {k: data[k] for k in data.files} if hasattr(data, "files") else data
    if any(o.get("classifier") for o in model.outputs):
        for row, best in enumerate(model.top_k(inputs, args.top_k or 5)):
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
    inputs = {k: decode_array(v)[:1] if model.batched else decode_array(v) for k, v in case.items()}
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
        **_image_times(model, args.runs),
        "peak_rss_mb": _peak_rss_mb(),
    }
    print(json.dumps(result))
    return 0


def _image_times(model: EdgeModel, runs: int) -> dict[str, float]:
    """p50 of decode -> tensor and of -> label over the raw samples (nothing without them, Pillow or tokenizers)."""
    samples = model.bundle.get("samples", [])
    if not samples or not model.can_decode():
        return {}
    data = [(model.directory / s["file"]).read_bytes() for s in samples]
    pre, end_to_end = [], []
    for index in range(runs):
        tick = time.perf_counter()
        inputs = model.preprocess(data[index % len(data)])
        processed = time.perf_counter()
        model.answer(model.run(inputs))
        pre.append(processed - tick)
        end_to_end.append(time.perf_counter() - tick)
    return {"pre_p50_ms": float(np.percentile(pre, 50)) * 1e3, "e2e_p50_ms": float(np.percentile(end_to_end, 50)) * 1e3}


def _peak_rss_mb() -> float:
    """This process's peak RSS: Linux's VmHWM (ru_maxrss also counts the parent's pages at fork)."""
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _bench(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    verify_files(args.bundle, bundle)
    verify_content(bundle)
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
        "raw": "text" if any(s.get("kind") == "text" for s in bundle.get("processing", {}).get("pre", [])) else "image",
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
        f"{report.get('raw', 'image')}->tensor p50",
        f"{report.get('raw', 'image')}->label p50",
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
                f"{r['pre_p50_ms']:.3f} ms" if "pre_p50_ms" in r else "-",
                f"{r['e2e_p50_ms']:.3f} ms" if "e2e_p50_ms" in r else "-",
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
    parser = argparse.ArgumentParser(
        prog="modelport_edge.py", description="Verify, run and benchmark a bundle.", allow_abbrev=False
    )
    # the metavar lists the public commands: argparse prints a subcommand helped with SUPPRESS as "==SUPPRESS=="
    commands = parser.add_subparsers(dest="command", required=True, metavar="{verify,predict,bench}")
    for name, run, help_text in (
        ("verify", _verify, "check every file's sha256 and every variant's golden outputs"),
        ("predict", _predict, "run an .npy/.npz input (top-k with labels for classifiers)"),
        ("bench", _bench, "cold start, latency p50/p90/p99, image processing p50, peak RSS and size per variant"),
        ("_bench-child", _bench_child, None),  # bench's own subprocess: no help, so not listed
    ):
        if help_text is None:
            p = commands.add_parser(name, allow_abbrev=False)
        else:
            p = commands.add_parser(name, help=help_text, allow_abbrev=False)
        p.add_argument("bundle", type=Path, help="the bundle directory (holds bundle.json)")
        p.add_argument("--variant", help="variant name (comma list for verify/bench; default: all / the default)")
        p.add_argument("--threads", type=int, help="interpreter threads (default: the runtime's)")
        p.set_defaults(run=run)
        if name == "predict":
            given = p.add_mutually_exclusive_group(required=True)
            given.add_argument("--input", type=Path, help=".npy (one input) or .npz keyed by input name")
            given.add_argument("--image", type=Path, help="an image file, through the bundle's processing (Pillow)")
            given.add_argument("--text", help="a text, through the bundle's tokenizer (tokenizers)")
            p.add_argument("-k", "--top-k", type=int, help="classes to print (default: the bundle's top-k, else 5)")
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
    except (EdgeInputError, MissingPillowError, MissingTokenizersError, OSError, ValueError) as exc:
        print(f"modelport_edge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
