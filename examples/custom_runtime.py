"""A custom runtime: serve ONNX models with the ``onnx`` package's reference evaluator, without onnxruntime.

    python examples/custom_runtime.py OUT_DIR

A runtime is a class with ``load``, ``predict`` and ``unload`` (the contract is the docstring of
``modelport.runtimes.base.Runtime``); a model's ``config.yaml`` names it as ``runtime: package.module:Class``,
which the server imports, so the module must be importable there (this script starts the server with the
repository root on ``PYTHONPATH``). The script writes a one-model repository under OUT_DIR (a small softmax
classifier as ONNX, its manifest, golden vectors and that ``config.yaml``), serves it with ``modelport serve``,
infers over KServe v2 JSON, checks the answer against numpy and stops the server. Needs the ``onnx`` package
(``pip install 'modelport[torch]'`` or ``[tf]`` brings it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from modelport.golden import GoldenCase, save_golden
from modelport.launcher import LaunchOptions, launched
from modelport.manifest import ModelManifest, OutputParity, ParityRecord, SourceInfo, TensorSpec, write_manifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework, rejected_input

ROOT = Path(__file__).resolve().parents[1]
MODEL = "softmax"
RUNTIME = "examples.custom_runtime:ReferenceRuntime"  # what config.yaml names


class ReferenceRuntime:
    """Runs an ONNX artifact with ``onnx.reference.ReferenceEvaluator`` (pure Python and numpy)."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = directory / manifest.artifact
        self.manifest = manifest
        self.evaluator: Any = None
        self.providers = ["onnx.reference"]  # optional: shown in the model's metadata

    def load(self) -> None:
        reference = import_framework("onnx.reference", "torch")  # the framework is imported here, not at the top
        self.evaluator = reference.ReferenceEvaluator(str(self.path))

    def predict(self, inputs: Arrays) -> Arrays:
        # one batch at a time per runtime object (the server's guarantee): no lock around the evaluator
        feed = {self.manifest.native(spec.name): inputs[spec.name] for spec in self.manifest.inputs}
        names = [self.manifest.native(spec.name) for spec in self.manifest.outputs]
        try:
            values = self.evaluator.run(names, feed)
        except IndexError as exc:  # a Gather index past its table: the request's values are at fault (400)
            raise rejected_input(str(exc)) from exc
        return {spec.name: np.asarray(value) for spec, value in zip(self.manifest.outputs, values, strict=True)}

    def unload(self) -> None:
        self.evaluator = None


def softmax_classifier(seed: int = 0) -> tuple[bytes, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``probabilities = softmax(x @ w + b)`` for 4 features and 3 classes, as ONNX bytes, with its weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString(), w, b


def reference(x: np.ndarray[Any, Any], w: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The classifier in numpy: what the golden vectors hold and what the server must answer."""
    logits = x @ w + b
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray[Any, Any] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def write_repository(root: Path) -> Path:
    """``root/softmax/1/`` (model.onnx, modelport.json, golden.npz) and ``root/softmax/config.yaml``."""
    directory = root / MODEL / "1"
    directory.mkdir(parents=True)
    artifact, w, b = softmax_classifier()
    (directory / "model.onnx").write_bytes(artifact)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    save_golden(directory / "golden.npz", [GoldenCase({"x": x}, {"probabilities": reference(x, w, b)})])
    manifest = ModelManifest(
        name=MODEL,
        version=1,
        family=MODEL,
        variant="onnx-reference",
        format="onnx",
        artifact="model.onnx",
        inputs=(TensorSpec(name="x", dtype="float32", shape=(-1, 4)),),
        outputs=(TensorSpec(name="probabilities", dtype="float32", shape=(-1, 3)),),
        max_batch_size=16,
        source=SourceInfo(framework="onnx", kind="file", location=str(directory / "model.onnx")),
        parity=ParityRecord(  # what the server's golden check at load holds the runtime to
            gate="tolerance",
            atol=1e-5,
            rtol=1e-4,
            batch_sizes=(5,),
            passed=True,
            outputs=(OutputParity(name="probabilities", max_abs_error=0, max_rel_error=0, passed=True),),
        ),
    )
    write_manifest(manifest, directory)
    (root / MODEL / "config.yaml").write_text(yaml.safe_dump({"runtime": RUNTIME}))
    return root


def main(out: Path) -> int:
    repo = write_repository(out / "repo")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    options = LaunchOptions(grpc_port=-1, env={"PYTHONPATH": path}, log=out / "server.log", timeout_s=120)
    x = np.array([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    with launched(repo, options=options) as server:
        meta = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        answer = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body).json()["outputs"][0]
    got = np.array(answer["data"], dtype=np.float32).reshape(answer["shape"])
    _, w, b = softmax_classifier()
    print("providers    :", meta["parameters"]["providers"])
    print("probabilities:", np.round(got.astype(np.float64), 4).tolist())
    print("matches numpy:", bool(np.allclose(got, reference(x, w, b), atol=1e-5)))
    return server.process.returncode or 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
