"""The models Triton's example clients (tritonclient's ``src/python/examples``) call, built as a user would.

``simple`` and ``simple_int8`` (INPUT0, INPUT1 [batch, 16] -> OUTPUT0 = sum, OUTPUT1 = difference) are a small
PyTorch module exported to ONNX by ``modelport export``; ``simple_string`` (the same on BYTES elements holding
decimal numbers) and ``simple_identity`` (BYTES in, the same out) cannot be exported from PyTorch, so they are
custom runtimes named by their ``config.yaml`` (README: "A model's config.yaml can name a runtime of your own").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelport.golden import GoldenCase, save_golden
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec, write_manifest
from modelport.runtimes.base import Arrays, RuntimeOptions, rejected_input
from tests.user_cli import run_modelport

SIMPLE_CONFIG = {"max_batch_size": 8}  # Triton's simple model batches 8; the override example changes it to 16


def simple() -> Any:
    """``modelport export`` factory: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    import torch

    class Simple(torch.nn.Module):
        output_names = ("OUTPUT0", "OUTPUT1")

        def forward(self, INPUT0: torch.Tensor, INPUT1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
            return INPUT0 + INPUT1, INPUT0 - INPUT1

    return Simple()


class StringArithmetic:
    """``simple_string``: INPUT0, INPUT1 BYTES elements holding decimal integers -> their sum and difference as
    decimal BYTES (Triton's ``simple_string`` model)."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.manifest = manifest

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        try:
            a, b = (np.vectorize(int, otypes=[np.int64])(inputs[name]) for name in ("INPUT0", "INPUT1"))
        except ValueError as exc:  # an element that is no decimal number: the request's fault (400)
            raise rejected_input(f"simple_string takes decimal numbers: {exc}") from exc
        return {"OUTPUT0": _decimal(a + b), "OUTPUT1": _decimal(a - b)}

    def unload(self) -> None:
        pass


class BytesIdentity(StringArithmetic):
    """``simple_identity``: OUTPUT0 is INPUT0, byte for byte."""

    def predict(self, inputs: Arrays) -> Arrays:
        return {"OUTPUT0": inputs["INPUT0"]}


def _decimal(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.vectorize(lambda v: str(v).encode(), otypes=[object])(values)


def build_repository(repo: Path, work: Path) -> Path:
    """``repo`` with simple, simple_int8 (exported), simple_string and simple_identity (custom runtimes)."""
    _export(repo, work, "simple", "int32")
    _export(repo, work, "simple_int8", "int8")
    (repo / "simple" / "config.yaml").write_text(yaml.safe_dump(SIMPLE_CONFIG))
    strings = [TensorSpec(name=f"INPUT{i}", dtype="string", shape=(-1, 16)) for i in (0, 1)]
    outputs = [TensorSpec(name=f"OUTPUT{i}", dtype="string", shape=(-1, 16)) for i in (0, 1)]
    numbers = np.arange(32).reshape(2, 16)
    golden_in = {"INPUT0": _decimal(numbers), "INPUT1": _decimal(numbers * 0 + 1)}
    golden_out = {"OUTPUT0": _decimal(numbers + 1), "OUTPUT1": _decimal(numbers - 1)}
    _custom(repo, "simple_string", "StringArithmetic", (strings, outputs), GoldenCase(golden_in, golden_out))
    identity = GoldenCase({"INPUT0": golden_in["INPUT0"]}, {"OUTPUT0": golden_in["INPUT0"]})
    _custom(repo, "simple_identity", "BytesIdentity", (strings[:1], outputs[:1]), identity)
    return repo


def _export(repo: Path, work: Path, name: str, dtype: str) -> None:
    specs = [f"--input=INPUT{i}:{dtype}:-1x16" for i in (0, 1)]
    done = run_modelport(
        "export", "tests.serving.triton_models:simple", "--format", "onnx", *specs, "--repository", str(repo),
        "--name", name, "--name-template", "{name}", "--quiet", cwd=work,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _custom(repo: Path, name: str, runtime: str, tensors: tuple[list[TensorSpec], ...], golden: GoldenCase) -> None:
    directory = repo / name / "1"
    directory.mkdir(parents=True)
    save_golden(directory / "golden.npz", [golden])
    manifest = ModelManifest(
        name=name,
        version=1,
        family=name,
        variant="python",
        format="onnx",  # the manifest's formats are export's; config.yaml's runtime is what serves it
        artifact="golden.npz",  # the runtime is all the model: no artifact of its own
        inputs=tuple(tensors[0]),
        outputs=tuple(tensors[1]),
        max_batch_size=8,
        source=SourceInfo(framework="onnx", kind="runtime", location=f"tests.serving.triton_models:{runtime}"),
    )
    write_manifest(manifest, directory)
    (repo / name / "config.yaml").write_text(yaml.safe_dump({"runtime": f"tests.serving.triton_models:{runtime}"}))


def classifier() -> Any:
    """``modelport export`` factory for ``grpc_client.py``'s model (it calls ``densenet_onnx`` with an image
    ``input`` [1, 299, 299, 3] FP32 and asks for ``InceptionV3/Predictions/Softmax``): mean colour -> 1001
    class probabilities."""
    import torch

    class Classifier(torch.nn.Module):
        output_names = ("InceptionV3/Predictions/Softmax",)

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 1001)

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(input.mean(dim=(1, 2))), dim=-1)

    torch.manual_seed(0)
    return Classifier()
