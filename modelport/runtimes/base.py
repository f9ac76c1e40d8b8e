"""The runtime protocol, its options, and lazy lookup by format name."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from modelport.errors import DependencyError, ModelportError, RejectedInputError, SourceError, UnsupportedError
from modelport.manifest import ModelManifest
from modelport.tensors import Arrays

__all__ = [
    "INDEX_FAULT",
    "Arrays",
    "OnnxArena",
    "RemoteTarget",
    "Runtime",
    "RuntimeOptions",
    "import_framework",
    "map_outputs",
    "open_runtime",
    "rejected_input",
    "runtime_class",
    "runtime_health",
]


# How frameworks word an index past a table (an embedding's token id, a gather): the request's fault.
INDEX_FAULT = re.compile(r"\bindex\b.*\bout of (range|bounds)\b|\bout of bounds\b", re.IGNORECASE)

_RUNTIMES = {
    "onnx": "modelport.runtimes.onnx:OnnxRuntime",
    "ort": "modelport.runtimes.onnx:OnnxRuntime",
    "torchscript": "modelport.runtimes.torch:TorchScriptRuntime",
    "pt2": "modelport.runtimes.torch:ExportedProgramRuntime",
    "savedmodel": "modelport.runtimes.savedmodel:SavedModelRuntime",
    "tflite": "modelport.runtimes.tflite:TFLiteRuntime",
    "handler": "modelport.runtimes.handler:HandlerRuntime",  # a TorchServe archive's custom handler
}

# runtimes that forward to an existing server instead of loading an artifact
_REMOTE_RUNTIMES = {
    "torchserve": "modelport.runtimes.torchserve:TorchServeRuntime",
    "tfserving": "modelport.runtimes.tfserving:TFServingRuntime",
}


@dataclass(frozen=True)
class RemoteTarget:
    """Where a remote runtime sends requests: server address, model name and version, limits."""

    address: str
    model: str
    version: str | None = None
    signature_name: str = "serving_default"
    timeout_s: float = 30.0
    health_interval_s: float = 2.0


# ONNX Runtime's CPU memory arena (runtimes/onnx.py): onnxruntime's own (one per session, grown region by
# region); one for the process with one large first region; or none
OnnxArena = Literal["session", "shared", "none"]  # not "off": YAML reads an unquoted off as false


@dataclass(frozen=True)
class RuntimeOptions:
    """How a runtime should execute: device, threads, ONNX execution providers and arena, or a remote server.

    ``worker_process``: run the model in a worker process of its own (handler models' ``workers: N``), which
    is killed and restarted when a batch runs past ``timeout_s``. ``max_response_bytes``: TorchServe's
    ``max_response_size`` for a handler's responses (0: none); ``envelope``: its ``service_envelope``;
    ``decode_input``: its ``decode_input_request``.
    """

    device: str = "cpu"
    intra_op_threads: int = 0
    providers: tuple[str, ...] = ()
    remote: RemoteTarget | None = None
    onnx_arena: OnnxArena = "session"
    worker_process: bool = False
    timeout_s: float = 60.0
    max_response_bytes: int = 0  # a TorchServe handler's largest response to one request (0: no limit)
    envelope: str = ""  # TorchServe's service_envelope around a handler (ts.torch_handler.request_envelope), if any
    decode_input: bool = True  # TorchServe's decode_input_request: JSON and text inputs decoded for the handler


class Runtime(Protocol):
    """Runs one model version: all a server (and export's validation) knows of a framework.

    Built as ``Class(directory, manifest, options)`` (cheap: nothing loaded yet); a model's ``config.yaml``
    names a custom class as ``runtime: package.module:Class``. The server calls ``load`` once, ``predict``
    many times, ``unload`` once, and builds one object per instance (``instances: N``). Optional members,
    looked up with ``getattr``: ``providers: list[str]``, what executes the model (shown in the model's
    metadata), ``restarts: int``, how often its worker process was restarted (``/metrics``), and
    ``health() -> tuple[bool, str]``, whether it can serve now and why not, called on the
    event loop for each request, so it must not block (a remote runtime returns what a background probe
    last saw); without it a loaded runtime is healthy.
    """

    def load(self) -> None:
        """Open the artifact, importing the framework here (``import_framework``), on a worker thread.

        A failure leaves the version FAILED with the message as its reason, and the server goes on:
        raise a ModelportError (``DependencyError``; ``UnavailableError`` when something it needs is
        down, which the next repository sync retries) or let the framework's own error out.
        """

    def predict(self, inputs: Arrays) -> Arrays:
        """One batch: numpy arrays by manifest input name, already checked against the manifest (dtype,
        shape, batch size); with ``max_batch_size > 0`` the first dimension is the batch, several requests'
        rows concatenated. Treat them as read-only (binary requests arrive as views of the body). Return an
        array for every manifest output, by name, batch first with the same rows: the server splits them.

        Each runtime object runs at most one batch at a time (from a worker thread, or the event loop for
        very fast models); parallelism is ``instances: N``, so no lock is needed for the server's sake.
        Values the model refuses (an index past a table) are the request's fault: raise
        ``rejected_input(detail)``, a 400 for that request alone (its batch-mates are re-run without it).
        ``UnavailableError``: the backend cannot be reached (503). Anything else is a fault: the client
        gets a generic 500 and the traceback is logged.
        """

    def unload(self) -> None:
        """Release the model, on a worker thread: after the last ``predict`` (queued requests finish
        first), or when another instance or the golden check fails at load. Not called if ``load`` raised."""


class _RuntimeFactory(Protocol):
    """A runtime class: ``Class(directory, manifest, options)``."""

    def __call__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> Runtime: ...


def runtime_class(fmt: str, custom: str | None = None) -> _RuntimeFactory:
    """The runtime class for artifact format ``fmt`` (or a custom ``module:Class``), imported on first use."""
    target = _REMOTE_RUNTIMES.get(custom, custom) if custom else _RUNTIMES.get(fmt)
    if target is None:
        raise UnsupportedError(f"no runtime for format {fmt!r}; known: {', '.join(_RUNTIMES)}")
    module_name, _, attr = target.partition(":")
    try:
        factory: _RuntimeFactory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnsupportedError(f"runtime {target!r} cannot be imported: {exc}") from None
    return factory


def open_runtime(
    directory: Path, manifest: ModelManifest, options: RuntimeOptions | None = None, custom: str | None = None
) -> Runtime:
    """Create and load the runtime for the model version in ``directory``."""
    runtime = runtime_class(manifest.format, custom)(directory, manifest, options or RuntimeOptions())
    try:
        runtime.load()
    except ModelportError:
        raise
    except Exception as exc:  # a framework's own loader error: say which artifact
        raise SourceError(f"{manifest.format} runtime cannot load {directory / manifest.artifact}: {exc}") from exc
    return runtime


def runtime_health(runtime: Runtime) -> tuple[bool, str]:
    """A runtime's own view of whether it can serve (remote runtimes probe their server), and why not."""
    probe = getattr(runtime, "health", None)
    if probe is None:
        return True, ""
    healthy, reason = probe()
    return bool(healthy), str(reason)


def import_framework(module: str, extra: str) -> Any:
    """Import an optional framework, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(f"{module} is not installed: pip install 'modelport[{extra}]' ({exc})") from None


def map_outputs(manifest: ModelManifest, values: list[np.ndarray[Any, Any]]) -> Arrays:
    """Name positional outputs with the manifest's output names."""
    if len(values) != len(manifest.outputs):
        raise SourceError(
            f"{manifest.name}: the artifact returned {len(values)} outputs, the manifest declares "
            f"{len(manifest.outputs)} ({', '.join(o.name for o in manifest.outputs)})"
        )
    return {spec.name: value for spec, value in zip(manifest.outputs, values, strict=True)}


def rejected_input(detail: str) -> RejectedInputError:
    """The error a runtime raises when its framework refused one request's values.

    ``detail`` is the framework's own words with its internals (node names, paths) already
    cut by the runtime; it is folded to one line of at most 200 characters.
    """
    text = " ".join(detail.split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return RejectedInputError(f"the model rejected the input values: {text or 'invalid values'}")
