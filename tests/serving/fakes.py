"""Fake runtimes and a toy repository: serving tests without any ML framework."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelport.golden import GoldenCase, save_golden
from modelport.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    OutputParity,
    ParityRecord,
    SourceInfo,
    TensorSpec,
    file_sha256,
    read_manifest,
    write_manifest,
)
from modelport.runtimes.base import Arrays, RuntimeOptions, rejected_input

BATCH_LOG: list[int] = []
SLOW_SECONDS = 0.3
STAGGER_SECONDS = 3.0
REJECTED = "idx=13 must be within the inclusive range [-13,12]"  # what RejectingRuntime's framework says
GATE = threading.Event()
GATE.set()


class EchoRuntime:
    """y = 2 * x and n = row sums of y, for a [batch, 3] input x; records each batch's rows."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.manifest = manifest

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        GATE.wait(10)
        x = inputs["x"]
        BATCH_LOG.append(int(x.shape[0]) if x.ndim else 1)
        return {"y": x * 2, "n": (x * 2).sum(axis=1, dtype=x.dtype)}

    def unload(self) -> None:
        pass


class WrongRuntime(EchoRuntime):
    """Returns 3 * x: it can never pass a golden check recorded for 2 * x."""

    def predict(self, inputs: Arrays) -> Arrays:
        out = super().predict(inputs)
        return {k: v * 1.5 for k, v in out.items()}


class FailingRuntime(EchoRuntime):
    def predict(self, inputs: Arrays) -> Arrays:
        raise RuntimeError("secret internal detail: GPU fell over")


class SlowRuntime(EchoRuntime):
    """EchoRuntime taking ``SLOW_SECONDS`` per batch (the golden check at load included)."""

    def predict(self, inputs: Arrays) -> Arrays:
        time.sleep(SLOW_SECONDS)
        return super().predict(inputs)


class PoisonRuntime(EchoRuntime):
    """EchoRuntime that raises on any batch holding the value 13 (it passes its golden check)."""

    def predict(self, inputs: Arrays) -> Arrays:
        if (inputs["x"] == 13).any():
            raise RuntimeError("secret internal detail: poisoned batch")
        return super().predict(inputs)


class RejectingRuntime(EchoRuntime):
    """EchoRuntime that refuses any batch holding the value 13, as onnxruntime refuses a token id past its
    embedding table: the runtime classifies that as the request's fault (``RejectedInputError``)."""

    def predict(self, inputs: Arrays) -> Arrays:
        if (inputs["x"] == 13).any():
            raise rejected_input(REJECTED)
        return super().predict(inputs)


def predictor(runtime: type[EchoRuntime]) -> Callable[[Arrays], Arrays]:
    """A fake runtime's ``predict``, to drive a ``Batcher`` without a repository."""
    return runtime(Path("."), None, RuntimeOptions()).predict  # the fakes never read their manifest


class StaggeredLoadRuntime(EchoRuntime):
    """EchoRuntime whose load takes ``STAGGER_SECONDS`` in every process but the first to claim the file named
    by ``$FAKES_LOAD_CLAIM`` (``--workers``: one worker loads at once, the others well after it)."""

    def load(self) -> None:
        try:
            Path(os.environ["FAKES_LOAD_CLAIM"]).open("x").close()
        except FileExistsError:
            time.sleep(STAGGER_SECONDS)  # a slow load, simulated


class BrokenLoadRuntime(EchoRuntime):
    def load(self) -> None:
        raise ValueError("model file is corrupt")


def write_model(
    repo: Path,
    name: str,
    version: int = 1,
    runtime: str = "EchoRuntime",
    dtype: str = "float32",
    max_batch_size: int = 8,
    config: dict[str, Any] | None = None,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """A model version served by a fake runtime, with golden vectors for 2 * x (x in 0..4)."""
    directory = repo / name / str(version)
    directory.mkdir(parents=True)
    np_dtype = np.dtype(dtype)
    x = (np.arange(6).reshape(2, 3) % 5).astype(np_dtype)
    expected = {"y": x * 2, "n": (x * 2).sum(axis=1, dtype=x.dtype)}
    save_golden(directory / "golden.npz", [GoldenCase({"x": x}, expected)])
    manifest = ModelManifest(
        name=name,
        version=version,
        family=name,
        variant="onnx",
        format="onnx",
        artifact="model.onnx",
        inputs=(TensorSpec(name="x", dtype=dtype, shape=(-1, 3), value_range=value_range),),
        outputs=(TensorSpec(name="y", dtype=dtype, shape=(-1, 3)), TensorSpec(name="n", dtype=dtype, shape=(-1,))),
        max_batch_size=max_batch_size,
        source=SourceInfo(framework="torch", kind="factory", location="fake"),
        parity=ParityRecord(
            gate="tolerance",
            atol=1e-5,
            rtol=1e-4,
            batch_sizes=(2,),
            passed=True,
            outputs=(
                OutputParity(name="y", max_abs_error=0, max_rel_error=0, passed=True),
                OutputParity(name="n", max_abs_error=0, max_rel_error=0, passed=True),
            ),
        ),
    )
    write_manifest(manifest, directory)
    settings = {"runtime": f"tests.serving.fakes:{runtime}", **(config or {})}
    if config is not None or not (repo / name / "config.yaml").exists():
        (repo / name / "config.yaml").write_text(yaml.safe_dump(settings))
    return directory


class IdentityRuntime(EchoRuntime):
    """Returns every input as ``out_<name>``: exercises every dtype and several inputs/outputs."""

    def predict(self, inputs: Arrays) -> Arrays:
        return {f"out_{name}": value for name, value in inputs.items()}


def write_identity_model(repo: Path, name: str, dtypes: list[str]) -> Path:
    """A model taking one [batch, 3] input per dtype and returning each as ``out_<input>``."""
    directory = repo / name / "1"
    directory.mkdir(parents=True)
    specs = tuple(TensorSpec(name=f"in_{d}", dtype=d, shape=(-1, 3)) for d in dtypes)
    outputs = tuple(TensorSpec(name=f"out_in_{d}", dtype=d, shape=(-1, 3)) for d in dtypes)
    _write_fake(directory, specs, outputs, "IdentityRuntime")
    return directory


def _write_fake(directory: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], runtime: str) -> None:
    """Version 1 of the model whose folder holds ``directory``, served by the fake ``runtime`` of this module."""
    name = directory.parent.name
    manifest = ModelManifest(
        name=name,
        version=1,
        family=name,
        variant="onnx",
        format="onnx",
        artifact="model.onnx",
        inputs=inputs,
        outputs=outputs,
        max_batch_size=8,
        source=SourceInfo(framework="torch", kind="factory", location="fake"),
    )
    write_manifest(manifest, directory)
    (directory.parent / "config.yaml").write_text(yaml.safe_dump({"runtime": f"tests.serving.fakes:{runtime}"}))


class SimpleRuntime(EchoRuntime):
    """Triton's ``simple`` example model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32 [batch, 16])."""

    def predict(self, inputs: Arrays) -> Arrays:
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}


def write_simple_model(repo: Path, name: str = "simple") -> Path:
    """The model Triton's shared memory examples call: two INT32 [batch, 16] inputs, their sum and difference."""
    directory = repo / name / "1"
    directory.mkdir(parents=True)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.int32)
    save_golden(
        directory / "golden.npz", [GoldenCase({"INPUT0": a, "INPUT1": b}, {"OUTPUT0": a + b, "OUTPUT1": a - b})]
    )
    spec = {"dtype": "int32", "shape": (-1, 16)}
    inputs = (TensorSpec(name="INPUT0", **spec), TensorSpec(name="INPUT1", **spec))
    outputs = (TensorSpec(name="OUTPUT0", **spec), TensorSpec(name="OUTPUT1", **spec))
    _write_fake(directory, inputs, outputs, "SimpleRuntime")
    return directory
    return directory


def seal(directory: Path, artifact: bytes = b"fake model bytes") -> Path:
    """Give a fake version an artifact file and record every file's sha256 in its manifest, as export does."""
    manifest = read_manifest(directory)
    (directory / manifest.artifact).write_bytes(artifact)
    files = {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    write_manifest(manifest.model_copy(update={"files": files}), directory)
    return directory


class Gate:
    """A processing function that holds its pool thread until ``opened``, and says (``holding``) when it holds it."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.opened = threading.Event()

    def __call__(self, items: Any) -> list[Any]:
        self.holding.set()
        assert self.opened.wait(30), "the gate was never opened"
        return list(items)
