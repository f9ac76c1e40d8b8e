"""PyTorch runtimes: TorchScript (``model.pt``) and torch.export (``model.pt2``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from modelport.cpus import default_threads
from modelport.errors import RejectedInputError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import INDEX_FAULT, Arrays, RuntimeOptions, import_framework, map_outputs, rejected_input

__all__ = ["ExportedProgramRuntime", "TorchScriptRuntime", "flatten_outputs", "index_fault", "size_fault"]


def flatten_outputs(result: Any) -> list[Any]:
    """Flatten a module's result (tensor, tuple/list, dict) into positional tensors."""
    if isinstance(result, dict):
        return [v for item in result.values() for v in flatten_outputs(item)]
    if isinstance(result, tuple | list):
        return [v for item in result for v in flatten_outputs(item)]
    return [result]


def index_fault(exc: IndexError | RuntimeError) -> str | None:
    """What an index error says (an embedding's id past its table), or None for any other fault.

    TorchScript wraps the op's error in a RuntimeError whose last line is the original one,
    after a traceback of the serialized code: only that line is kept.
    """
    last = _last_line(exc)
    if isinstance(exc, IndexError) or INDEX_FAULT.search(last):
        return last or "index out of range"
    return None


# an input too small for the model's kernels (a dynamic length shorter than a conv's kernel or a pooling's window):
# the request's own fault, as onnxruntime's INVALID_ARGUMENT and a torch.export program's guards say of the same input
_SIZE_FAULT = re.compile(
    r"Kernel size can't be greater than actual input size|Output size is too small"
    r"|Padding size should be less than the corresponding input dimension"
)


def size_fault(exc: RuntimeError) -> str | None:
    """What a too-small-input error says (its last line, as :func:`index_fault` keeps it), or None."""
    last = _last_line(exc)
    return last if _SIZE_FAULT.search(last) else None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return re.sub(r"^\w+(Error|Exception): ", "", lines[-1] if lines else "")


class _TorchRuntime:
    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = directory / manifest.artifact
        self.manifest = manifest
        self.options = options
        self.module: Any = None
        self.torch: Any = None

    def load(self) -> None:
        self.torch = import_framework("torch", "torch")
        threads = self.options.intra_op_threads or default_threads()  # torch reads the affinity, not a CPU limit
        if threads:
            self.torch.set_num_threads(threads)
        self.module = self._load_module()

    def _load_module(self) -> Any:
        raise NotImplementedError

    def predict(self, inputs: Arrays) -> Arrays:
        torch = self.torch
        device = self.options.device
        args = [
            torch.from_numpy(np.require(inputs[s.name], requirements=("C", "W"))).to(device)
            for s in self.manifest.inputs
        ]
        with torch.inference_mode():
            try:
                result = self.module(*args)
            except (IndexError, RuntimeError) as exc:
                detail = index_fault(exc) or (size_fault(exc) if isinstance(exc, RuntimeError) else None)
                if detail is None:
                    raise
                raise rejected_input(detail) from exc
            except AssertionError as exc:  # a torch.export program checks the sizes it was exported for
                if not str(exc).startswith("Guard failed"):
                    raise
                shapes = ", ".join(f"{s.name} {list(inputs[s.name].shape)}" for s in self.manifest.inputs)
                raise RejectedInputError(
                    f"the torch.export program refuses inputs of these shapes ({shapes}): {exc}"
                ) from exc
        return map_outputs(self.manifest, [t.detach().cpu().numpy() for t in flatten_outputs(result)])

    def unload(self) -> None:
        self.module = None


class TorchScriptRuntime(_TorchRuntime):
    """Runs a TorchScript archive with ``torch.jit.load``."""

    def _load_module(self) -> Any:
        module = self.torch.jit.load(str(self.path), map_location=self.options.device)
        return module.eval()


class ExportedProgramRuntime(_TorchRuntime):
    """Runs a torch.export ``.pt2`` program."""

    def _load_module(self) -> Any:
        program = self.torch.export.load(str(self.path))
        return program.module().to(self.options.device)
