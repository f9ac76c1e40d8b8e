"""TorchServe custom handlers, run in-process with TorchServe's own ``ts`` package (format ``handler``).

The version directory is the archive's model directory, as TorchServe unpacks it: ``MAR-INF/MANIFEST.json``
(the artifact), the handler file, the model file, weights and extra files. The handler is loaded as
TorchServe's model loader loads it: ``handler.py[:function]``; a module-level function (``handle`` by
default) is the entry point, called once with ``None`` to initialize; otherwise the module's one class is
instantiated and its ``initialize(context)`` runs once per instance, then ``handle(batch, context)`` once
per batch. The context is a real ``ts.context.Context``: the archive manifest, ``system_properties``
(``model_dir``, ``gpu_id``, ``batch_size``, ...), request ids, headers and a metrics cache.

The model takes one BYTES input ``data`` (one request per element; the batch is the list of requests)
and answers one BYTES output ``output``: the handler's response per request, encoded as TorchServe's
worker encodes it (bytes as they are, str as UTF-8, a tensor ``torch.save``d, anything else
``json.dumps(value, indent=2)``). A
request from TorchServe's ``/predictions`` is framed (``runtimes/handler_request.py``): the handler gets its
named inputs as TorchServe's worker decodes them (``{"body": ...}`` for the body, one key per multipart part
or form field; ``application/json`` parsed, ``text/*`` as str, anything else bytes), its headers through
``context.get_request_header``, and the content type, status and headers it sets on the context go back
with its response. A bare payload (KServe v2, TF Serving, golden samples) reaches the handler as
``{"data": value, "body": value}``, a JSON object or array parsed first. A handler that fails fails as in
TorchServe's worker: ``PredictionException`` with its code and message, MemoryError 507 ``Out of
resources``, anything else 503 ``Prediction failed`` (:class:`~modelport.errors.HandlerError`).

Where it runs: with ``workers: N`` in the model's ``config.yaml`` each instance is a worker process of its
own (``modelport.runtimes.handler_process``), as TorchServe runs handlers: a crash fails only that worker's
batch (503) and the worker is restarted. Otherwise handlers run on threads of the server's process. The
archive directory is put on ``sys.path`` for the handler's imports (TorchServe's worker does the same); in
the server's process, the modules the handler imports from its archive (``model.py``) are taken out of
``sys.modules`` again once it has initialized, so another archive's module of the same name is its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import HandlerError, SourceError, summarize
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework
from modelport.runtimes.handler_request import (
    Reply,
    TorchServeRequest,
    decode_predict_response,
    decode_reply,
    decode_request,
    deliver,
    encode_reply,
    split_chunks,
)

if TYPE_CHECKING:
    from modelport.runtimes.handler_process import HandlerWorker

__all__ = ["INPUT", "OUTPUT", "HandlerRuntime", "encode_response", "request_value"]

INPUT = "data"
OUTPUT = "output"
_IMPORT_LOCK = threading.Lock()
_ARCHIVES: set[str] = set()  # the directories handlers were imported from (resolved)
log = logging.getLogger(__name__)

EntryPoint = Callable[[Any, Any], Any]


class HandlerRuntime:
    """Runs an archive's custom handler on batches of payloads (see the module docstring)."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.directory = directory
        self.manifest = manifest
        self.options = options
        self.context: Any = None
        self.ts_context: Any = None
        self.entry: EntryPoint | None = None
        self.module_name = ""
        self.providers = ["torchserve-handler"]
        self.worker: HandlerWorker | None = None
        # where a streaming handler's intermediate responses go as they are sent: the stream's callback here; a
        # worker process sends them up its pipe (runtimes/handler_process.py)
        self.intermediate: Callable[[str, Reply], None] = deliver

    @property
    def restarts(self) -> int:
        """How often this instance's worker process was restarted (always 0 in-process)."""
        return self.worker.restarts if self.worker is not None else 0

    def load(self) -> None:
        """Import the handler, build the TorchServe context and initialize the handler once (in a worker
        process of its own when ``options.worker_process``)."""
        if self.options.worker_process:
            from modelport.runtimes.handler_process import HandlerWorker

            self.worker = HandlerWorker(self.directory, self.options)
            self.worker.start()
            return
        context_module = self.ts_context = import_framework("ts.context", "torchserve")
        archive = _archive_manifest(self.directory)
        handler = str(archive.get("model", {}).get("handler", ""))
        if not handler:
            raise SourceError(f"{self.directory}: the archive names no handler")
        metrics = _metrics_cache(self.directory)
        metrics.model_name = self.manifest.name  # the name it is served by, as TorchServe's registered name
        self.context = context_module.Context(
            self.manifest.name,
            str(self.directory),
            archive,
            max(1, self.manifest.max_batch_size),
            _gpu_id(self.options.device),
            str(import_framework("ts", "torchserve").__version__),  # TorchServe passes its own version
            metrics=metrics,
            model_yaml_config=_model_yaml_config(self.directory, archive),
        )
        with _IMPORT_LOCK, _isolated_imports(self.directory), _missing_requirements(self.directory, archive):
            module = _import_handler(self.directory, handler)
            self.module_name = module.__name__
            entry, initialize = _entry_point(module, handler)
            initialize(self.context)
        self.entry = _enveloped(entry, self.options.envelope) if self.options.envelope else entry

    def predict(self, inputs: Arrays) -> Arrays:
        """One batch: each element of ``data`` is one request (a bare payload, or a framed TorchServe request,
        ``runtimes/handler_request.py``); one response per request, framed when its request was."""
        if self.worker is not None:
            return _within(self.worker.predict(inputs), self.options.max_response_bytes)
        assert self.entry is not None, "load() first"
        payloads = inputs[INPUT].ravel().tolist()
        requests = [decode_request(p) if isinstance(p, bytes) else None for p in payloads]
        encoded = np.empty(len(payloads), dtype=object)
        for group in _groups(requests):  # describe alone, explanations apart
            encoded[group] = self._run([requests[i] for i in group], [payloads[i] for i in group])
        return _within({OUTPUT: encoded}, self.options.max_response_bytes)

    def _run(self, requests: list[TorchServeRequest | None], payloads: list[object]) -> list[bytes]:
        """One call of the handler on ``requests`` (their ``payloads``): each one's encoded response."""
        decode = self.options.decode_input
        batch = [_row(request, payload, decode) for request, payload in zip(requests, payloads, strict=True)]
        stream = self._prepare(requests)
        responses = self._handle(batch)
        encoded = []
        for i, (request, response) in enumerate(zip(requests, responses, strict=True)):
            sent = stream.sent[i]
            if request is None:  # a bare payload's answer: what a TorchServe client would read, streamed or not
                encoded.append(b"".join([*(r.body for r in sent), encode_response(response)]))
            else:
                encoded.append(
                    encode_reply(_streamed(sent, self._reply(i, response)) if sent else self._reply(i, response))
                )
        return encoded

    def _handle(self, batch: list[dict[str, Any]]) -> list[Any]:
        """The handler on one batch, failing as TorchServe's worker fails (``ts/service.py``): a
        ``PredictionException`` with its code and message, a MemoryError (or CUDA's) 507, anything else 503."""
        assert self.entry is not None
        try:
            responses = self.entry(batch, self.context)
        except MemoryError:
            log.error("the handler ran out of memory", exc_info=True)
            raise HandlerError("Out of resources", 507) from None
        except Exception as exc:
            if _is_prediction_exception(exc):
                log.error("the handler raised %s", summarize(exc), exc_info=True)
                raise HandlerError(str(exc.message), int(exc.error_code)) from None  # type: ignore[attr-defined]
            log.warning("invoking the handler failed", exc_info=True)
            raise HandlerError(
                "Out of resources" if "CUDA" in str(exc) else "Prediction failed", 507 if "CUDA" in str(exc) else 503
            ) from None
        if not isinstance(responses, list):
            log.warning("the handler returned a %s, not a list", type(responses).__name__)
            raise HandlerError("Invalid model predict output", 503)
        if len(responses) != len(batch):
            log.warning("the handler answered %d responses for a batch of %d requests", len(responses), len(batch))
            raise HandlerError("number of batch response mismatched", 503)
        return responses

    def _reply(self, index: int, response: object) -> Reply:
        """A response with what the handler set on the context for its request (TorchServe's response)."""
        processor = self.context.request_processor[index]
        headers = {str(k): str(v) for k, v in processor.get_response_headers().items()}
        content_type = headers.pop("content-type", headers.pop("Content-Type", ""))
        status = processor.get_response_status_code() or 200
        return Reply(encode_response(response), int(status), content_type, tuple(headers.items()))

    def unload(self) -> None:
        """Drop the handler and its module, or stop its worker process (TorchServe calls no hook either)."""
        if self.worker is not None:
            self.worker.stop()
        sys.modules.pop(self.module_name, None)
        self.entry = None
        self.context = None

    def _prepare(self, requests: list[TorchServeRequest | None]) -> _Intermediate:
        """Per batch, as TorchServe's service sets them: request ids, request headers, the metrics' ids, and the
        socket that ``send_intermediate_predict_response`` writes a streaming handler's responses to."""
        ids = {i: str(uuid.uuid4()) for i in range(len(requests))}
        self.context.request_ids = ids
        self.context.request_processor = [self.ts_context.RequestProcessor(self._properties(r)) for r in requests]
        self.context.metrics.request_ids = ids
        streams = {i: r.stream for i, r in enumerate(requests) if r is not None and r.stream}
        stream = self.context.cl_socket = _Intermediate(ids, streams, self.intermediate)
        return stream

    def _properties(self, request: TorchServeRequest | None) -> dict[str, Any]:
        """A request's properties; for a stateful model (``sequenceBatching: true`` in its model config) its
        sequence (``context.get_sequence_id``) as TorchServe's frontend sets it: the ``ts_request_sequence_id``
        header, or gRPC's ``sequence_id``, else a new sequence ``ts-seq-<uuid>`` of its own."""
        properties = request.properties() if request is not None else {}
        key = str(self.context.header_key_sequence_id)
        if _stateful(self.context.model_yaml_config) and not properties.get(key):
            given = request.sequence if request is not None else ""
            properties[key] = given or f"ts-seq-{uuid.uuid4()}"
        return properties


def _within(outputs: Arrays, limit: int) -> Arrays:
    """The batch's responses, unless one (a streamed one's message) is over ``limit`` bytes (TorchServe's
    ``max_response_size``): TorchServe's frontend then drops the worker's connection and fails the whole batch,
    500 ``Worker died.`` (the worker restarts; here the handler keeps serving)."""
    if limit <= 0:
        return outputs
    for element in outputs[OUTPUT].ravel().tolist():
        reply = decode_reply(bytes(element))
        if any(len(body) > limit for body in split_chunks(reply.body, reply.chunks)):
            log.warning("a response is over max_response_bytes %d: the batch fails, as in TorchServe", limit)
            raise HandlerError("Worker died.", 500)
    return outputs


def _stateful(config: dict[str, Any]) -> bool:
    """Whether TorchServe 0.12 serves the model with sequence batching (``sequenceBatching: true``)."""
    return config.get("sequenceBatching") is True


class _Intermediate:
    """``context.cl_socket`` of one handler call: what a streaming handler sends ahead of its final responses
    (``send_intermediate_predict_response`` writes TorchServe's worker-protocol frames to it), per request; a
    request that names a stream has each one handed on to it (``forward``) as it comes."""

    def __init__(self, ids: dict[int, str], streams: dict[int, str], forward: Callable[[str, Reply], None]) -> None:
        self.index = {request_id: i for i, request_id in ids.items()}
        self.sent: dict[int, list[Reply]] = {i: [] for i in ids}
        self.streams = streams
        self.forward = forward
        self.lock = threading.Lock()  # a handler may send from threads of its own (MicroBatching's)

    def sendall(self, frame: bytes) -> None:
        for request_id, reply in decode_predict_response(bytes(frame)):
            index = self.index.get(request_id)
            if index is None:
                raise HandlerError("Prediction failed", 503)  # a response to a request of another batch
            with self.lock:
                self.sent[index].append(reply)
                if index in self.streams:
                    self.forward(self.streams[index], reply)


def _streamed(sent: list[Reply], final: Reply) -> Reply:
    """A streamed response: TorchServe answers with the first response's status, content type and headers, and
    sends every response's body in turn (a chunk each over HTTP, a message each over gRPC's StreamPredictions)."""
    first = sent[0]
    bodies = [r.body for r in sent]
    return first._replace(body=b"".join([*bodies, final.body]), chunks=tuple(len(b) for b in bodies))


def _groups(requests: list[TorchServeRequest | None]) -> list[list[int]]:
    """The handler calls a batch takes: the requests to describe the model (TorchServe's ``customized=true``
    describe, header ``describe: True``) one by one, as ``BaseHandler`` reads that header of request 0 only;
    for the same reason the explanations (header ``explain: True``) in one call and the predictions in another
    (TorchServe's batch may mix them, and ``BaseHandler`` then explains or predicts them all, by request 0)."""
    describe = [i for i, r in enumerate(requests) if r is not None and r.describes()]
    explain = [i for i, r in enumerate(requests) if r is not None and r.explains() and i not in describe]
    rest = [i for i in range(len(requests)) if i not in describe and i not in explain]
    return [[i] for i in describe] + [group for group in (explain, rest) if group]


def _row(request: TorchServeRequest | None, payload: object, decode: bool) -> dict[str, Any]:
    """What the handler gets for one request: TorchServe's named inputs (decoded unless TorchServe's
    ``decode_input_request=false``), or a bare payload under both names."""
    if request is not None:
        return request.row(decode)
    value = request_value(payload)
    return {"data": value, "body": value}


def _is_prediction_exception(exc: Exception) -> bool:
    """A ``ts.utils.util.PredictionException`` (by its attributes: the handler imported its own ``ts``)."""
    return type(exc).__name__ == "PredictionException" and hasattr(exc, "error_code") and hasattr(exc, "message")


def request_value(payload: object) -> object:
    """A payload as the handler sees it: a JSON object or array parsed, text as UTF-8 bytes, bytes unchanged."""
    data = payload.encode() if isinstance(payload, str) else payload
    if isinstance(data, bytes) and data.lstrip()[:1] in (b"{", b"["):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def encode_response(value: object) -> bytes:
    """One response as TorchServe's worker writes it to the client (``create_predict_response``): bytes as
    they are, str as UTF-8, a torch tensor ``torch.save``d, anything else as indented JSON; what is not JSON
    (a numpy array) is TorchServe's 503 ``Unsupported model output data type.``."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    torch = sys.modules.get("torch")  # a handler that returned a tensor has imported torch
    if torch is not None and isinstance(value, torch.Tensor):
        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()
    try:
        return json.dumps(value, indent=2).encode()
    except TypeError:
        log.warning("the handler returned a %s, which is not JSON", type(value).__name__)
        raise HandlerError("Unsupported model output data type.", 503) from None


def _archive_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "MAR-INF" / "MANIFEST.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read the archive manifest: {exc}") from None
    return data


def _model_yaml_config(directory: Path, archive: dict[str, Any]) -> dict[str, Any]:
    """The archive's ``--config-file`` (``model-config.yaml``) as TorchServe reads it; ``{}`` without one."""
    name = archive.get("model", {}).get("configFile")
    if not name:
        return {}
    import yaml

    try:
        config: dict[str, Any] = yaml.safe_load((directory / name).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError(f"{directory / name}: cannot read the model config file: {exc}") from None
    return config


def _import_handler(directory: Path, handler: str) -> ModuleType:
    """The handler file as a module of its own name; the archive directory on ``sys.path`` for its imports."""
    module_name = handler.split(":", 1)[0].removesuffix(".py").split("/")[-1]
    path = directory / f"{module_name}.py"
    if not path.is_file():
        raise SourceError(f"{directory}: the handler file {path.name} is not in the archive")
    if str(directory) in sys.path:
        sys.path.remove(str(directory))
    sys.path.insert(0, str(directory))  # first: its own model.py before another archive's
    unique = f"modelport_handler_{uuid.uuid4().hex}_{module_name}"
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _isolated_imports(directory: Path) -> Iterator[None]:
    """Around a handler's import and initialize: the modules it imports from its archive (``model.py``) are
    its own. Before, modules another archive's handler imported late (in ``handle``) are dropped; after, the
    ones imported from ``directory`` are taken out of ``sys.modules`` (the handler keeps its references)."""
    _ARCHIVES.add(str(directory.resolve()))
    _drop_modules(lambda file: any(Path(file).is_relative_to(root) for root in _ARCHIVES))
    try:
        yield
    finally:
        root = str(directory.resolve())
        _drop_modules(lambda file: Path(file).is_relative_to(root))


@contextlib.contextmanager
def _missing_requirements(directory: Path, archive: dict[str, Any]) -> Iterator[None]:
    """A module the handler cannot import, in an archive with a ``--requirements-file``: say that modelport does
    not install it (TorchServe pip-installs it with ``install_py_dep_per_model=true``) and how to."""
    requirements = archive.get("model", {}).get("requirementsFile")
    try:
        yield
    except ImportError as exc:
        if not requirements:
            raise
        raise SourceError(
            f"the handler cannot import {exc.name or 'a module'} ({exc}); the archive's requirements file "
            f"{requirements} lists what it needs, and modelport does not install it: "
            f"pip install -r {directory / requirements} into the server's environment"
        ) from None


def _drop_modules(inside: Callable[[str], bool]) -> None:
    """Take the modules whose file ``inside`` accepts out of ``sys.modules`` (handlers' own are kept)."""
    for name in [n for n in sys.modules if not n.startswith("modelport_handler_")]:
        file = _module_file(name)
        if file is not None and inside(file):
            log.debug("module %s stays private to its handler archive", name)
            del sys.modules[name]


def _module_file(name: str) -> str | None:
    file = getattr(sys.modules.get(name), "__file__", None)
    return str(Path(file).resolve()) if isinstance(file, str) else None


def _entry_point(module: ModuleType, handler: str) -> tuple[EntryPoint, Callable[[Any], Any]]:
    """TorchServe's model loader: a module-level function, else the module's one class's ``handle``."""
    function = handler.split(":", 1)[1] if ":" in handler else "handle"
    entry = getattr(module, function, None)
    if callable(entry):
        return entry, lambda context: entry(None, context)
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    if len(classes) != 1:
        names = [c.__name__ for c in classes]
        raise SourceError(f"handler {handler}: expected one class or a function {function}(); found classes {names}")
    service: Any = classes[0]()
    if not hasattr(service, "handle"):
        raise SourceError(f"handler {handler}: class {classes[0].__name__} has no handle method")
    return service.handle, service.initialize


def _enveloped(entry: EntryPoint, envelope: str) -> EntryPoint:
    """The entry point inside TorchServe's ``service_envelope`` (``json``, ``kservev2``...), as its model loader
    wraps it: the envelope class of ``ts.torch_handler.request_envelope.<envelope>`` unpacks each batch for the
    handler and packs its responses (``initialize`` ran on the handler itself, as in TorchServe)."""
    module = import_framework(f"ts.torch_handler.request_envelope.{envelope}", "torchserve")
    util = import_framework("ts.utils.util", "torchserve")
    envelope_class = util.list_classes_from_module(module)[0]
    handle: EntryPoint = envelope_class(entry).handle
    return handle


def _metrics_cache(directory: Path) -> Any:
    """TorchServe's metrics cache (handlers call ``context.metrics.add_time``, ``get_metric``...) over the archive's
    own ``metrics.yaml`` (an extra file; TorchServe's ``metrics_config``), else TorchServe's default metrics file.
    Its metrics are logged as TorchServe's worker logs them (``[METRICS]name.unit:value|#dimensions|...``)."""
    cache = import_framework("ts.metrics.metric_cache_yaml_impl", "torchserve")
    config = directory / "metrics.yaml"
    if not config.is_file():
        config = Path(import_framework("ts", "torchserve").__file__).parent / "configs" / "metrics.yaml"
    metrics = cache.MetricsCacheYamlImpl(config_file_path=str(config))
    metrics.initialize_cache()  # its model_metrics up front, as in TorchServe's worker: get_metric finds them
    return metrics


def _gpu_id(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)
