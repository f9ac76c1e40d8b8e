"""Application payloads: models that take images or text and answer with their postprocessor's JSON.

A model version whose ``config.yaml`` declares ``processors:`` is served through its processors (built
at load, :attr:`Execution.processors`). What clients see, in every protocol's metadata:

- input: with ``pre`` steps, one BYTES tensor of shape ``[-1]``, one payload per element (an encoded
  image, UTF-8 text), named ``image``, ``text`` or ``data`` after the decoding step (``image``, ``text``,
  ``custom``); TF Serving's ``<name>_bytes`` is accepted for it. Without ``pre``, the model's tensors.
- output: with ``post`` steps, one BYTES tensor ``output`` of shape ``[-1]``, each element one row's
  response as UTF-8 JSON (``{"tabby": 0.71, ...}``); JSON protocols (TorchServe, TF Serving REST)
  answer the decoded values instead (:attr:`InferResponse.results`). Without ``post``, the model's tensors.

One request's payloads are preprocessed together, in one call of its own, in a small thread pool shared
by the data plane (Pillow decodes and resizes without the GIL), never on the event loop; concurrent
requests' calls share the trip to the pool (:mod:`modelport.serving.processing_pool`), and the model's
batcher groups their tensors. Cheap stages (a top-k postprocessor) run on the event loop. A bad payload
fails its request alone with a 4xx naming the input; a processor that raises is a generic 500 with
its traceback logged. Triton's classification extension (:func:`classify`) works for every model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from modelport.cpus import usable_cpus
from modelport.errors import (
    InferenceError,
    InvalidArgumentError,
    ModelportError,
    PayloadTooLargeError,
    SpecError,
    summarize,
)
from modelport.manifest import ModelManifest
from modelport.processing import Processors
from modelport.processing.base import without_batch_dim
from modelport.processing.labels import Labels
from modelport.serving import tracing
from modelport.serving.errors import http_status
from modelport.serving.metrics import Metrics
from modelport.serving.model import Execution, ServedVersion
from modelport.serving.processing_pool import ProcessingPool
from modelport.serving.types import InferRequest, InferResponse, RequestedOutput, TensorMetadata
from modelport.tensors import Arrays, dtype_of_array

__all__ = [
    "OUTPUT",
    "Applications",
    "classify",
    "external_tensors",
    "naming_the_payload",
    "payload_name",
    "renaming_inputs",
]

log = logging.getLogger(__name__)

OUTPUT = "output"
_PAYLOAD_NAMES = {"image": "image", "text": "text", "custom": "data"}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def payload_name(processors: Processors) -> str:
    """The external input's name: after the first ``pre`` step's kind."""
    return _PAYLOAD_NAMES.get(processors.spec.pre[0].kind, "data")


def naming_the_payload(error: ModelportError, payload: str, made: Sequence[str], also_made: bool) -> ModelportError:
    """A ``pre`` step's error about a payload, naming the input the client sent (``payload``) where it names a
    tensor the processors make of it (``made``; kept beside it when ``also_made``: a model's own input)."""
    named = f"input {payload!r}"
    made = [t for t in made if t != payload]
    return renaming_inputs(error, {t: f"{named} (model input {t!r})" if also_made else named for t in made})


def renaming_inputs(error: ModelportError, names: Mapping[str, str]) -> ModelportError:
    """``error`` with each ``input 'NAME'`` its message says written as ``names[NAME]`` (the same error when
    nothing changes)."""
    message = error.message
    for tensor, named in names.items():
        if named != f"input {tensor!r}":
            message = message.replace(f"input {tensor!r}", named)
    if message == error.message:
        return error
    renamed = copy.copy(error)
    renamed.message, renamed.args = message, (message,)
    return renamed


def external_tensors(
    processors: Processors, manifest: ModelManifest
) -> tuple[tuple[TensorMetadata, ...], tuple[TensorMetadata, ...]]:
    """The inputs and outputs a processed model shows its clients (see the module docstring)."""
    inputs = tuple(
        TensorMetadata(s.name, s.dtype, tuple(s.shape), manifest.native(s.name), manifest.signature_key(s.name))
        for s in manifest.inputs
    )
    outputs = tuple(
        TensorMetadata(s.name, s.dtype, tuple(s.shape), manifest.native(s.name), manifest.signature_key(s.name))
        for s in manifest.outputs
    )
    if processors.pre:
        name = payload_name(processors)
        inputs = (TensorMetadata(name, "string", (-1,), name),)
    if processors.post:
        outputs = (TensorMetadata(OUTPUT, "string", (-1,), OUTPUT),)
    return inputs, outputs


class Applications:
    """Runs the processors of every processed model in one bounded thread pool, timed in ``/metrics``."""

    def __init__(self, threads: int, metrics: Metrics) -> None:
        # default: a core left to the event loop (liveness, request I/O), at most 8 threads; the CPUs this
        # process may use, not the machine's (a server pinned to one core, or limited to one CPU, gets one thread)
        size = threads or max(1, min(8, usable_cpus() - 1))
        self.pool = ProcessingPool(size)
        self._metrics = metrics

    def close(self) -> None:
        """Stop the pool once the processing under way finishes."""
        self.pool.close()

    async def infer(self, served: ServedVersion, request: InferRequest) -> InferResponse:
        """Preprocess the payloads, run the model through its batcher, postprocess each row."""
        manifest = served.require_ready()  # before any processing: NotReady, Unavailable
        execution, batcher = served.execution, served.batcher
        assert execution is not None and execution.processors is not None and batcher is not None
        processors = execution.processors
        key = (served.name, str(served.version))
        tensors = request.inputs
        if processors.pre:
            name = payload_name(processors)
            payloads = _payloads(request.inputs, name)
            if not manifest.max_batch_size and len(payloads) > 1:  # it runs one request, one row, a call
                raise SpecError(
                    f"input {name!r}: the model has no batch dimension; send one payload per request, "
                    f"not {len(payloads)}"
                )
            try:
                preprocessed = await self.process(processors.preprocess, payloads, "pre", key)
            except (InvalidArgumentError, PayloadTooLargeError) as exc:
                raise naming_the_payload(exc, name, [s.name for s in manifest.inputs], also_made=True) from None
            tensors = _concatenate(preprocessed)
            if not manifest.max_batch_size:
                tensors = without_batch_dim(tensors, manifest.inputs)
        served.validate(tensors)
        outputs = await batcher.submit(tensors, execution.limits.timeout_s)
        version = str(served.version)
        if not processors.post:
            selected = _selected(outputs, request, execution, bool(manifest.max_batch_size))
            return InferResponse(served.name, version, selected, id=request.id)
        _check_wanted(request.outputs, served.name)
        rows = _rows(outputs, tensors, bool(manifest.max_batch_size))
        results = await self.process(processors.postprocess, rows, "post", key)
        encoded = np.array([orjson.dumps(r, option=_JSON_OPTIONS) for r in results], dtype=object)
        return InferResponse(
            served.name, version, {OUTPUT: encoded}, id=request.id, results=results, json_outputs=(OUTPUT,)
        )

    async def process(
        self, function: Callable[[Sequence[object]], Sequence[object]], items: list[Any], stage: str, key: Any
    ) -> list[Any]:
        """One processing ``stage`` (``pre`` or ``post``) of one request, timed under ``key`` (model, version):
        each item's result, or the first item's error raised; a processor's own fault is a generic 500."""
        histogram = self._metrics.preprocess_seconds if stage == "pre" else self._metrics.postprocess_seconds
        with tracing.span(function.__name__, items=len(items)):  # preprocess / postprocess
            outcome = await self.pool.run((*key, stage), function, items)
        if outcome.error is not None:
            if isinstance(outcome.error, ModelportError):
                raise outcome.error
            # the processor's own fault: logged with its traceback, a generic 500 to the client
            log.error("model %s version %s: processing failed", *key, exc_info=outcome.error)
            raise InferenceError(f"processing failed: {summarize(outcome.error)}") from None
        histogram.labels(*key).observe(outcome.seconds)
        assert outcome.results is not None
        for result in outcome.results:
            if isinstance(result, ModelportError):
                if http_status(result) >= 500:
                    log.error("model %s version %s: processing failed: %s", *key, result.message)
                raise result
        return outcome.results


def _payloads(inputs: Arrays, name: str) -> list[object]:
    """The request's payloads: the elements of its one BYTES input (``name``, or TF Serving's ``name_bytes``)."""
    value = inputs.get(name)
    if value is None:
        value = inputs.get(f"{name}_bytes")
    if value is None or len(inputs) != 1:
        raise InvalidArgumentError(
            f"the model takes one input {name!r} (BYTES, one payload per element); got {sorted(inputs)}"
        )
    if value.dtype.kind not in ("O", "S", "U"):
        raise SpecError(f"input {name!r}: datatype {dtype_of_array(value).v2} does not match the model's BYTES")
    items = [str(x) if isinstance(x, np.str_) else x for x in value.ravel().tolist()]
    if not items:
        raise SpecError(f"input {name!r}: no payload (the tensor is empty)")
    return items


def _concatenate(rows: list[Any]) -> Arrays:
    """One request's preprocessed rows (each with a batch dimension of 1) as one batch."""
    if len(rows) == 1:
        result: Arrays = rows[0]
        return result
    try:
        return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}
    except ValueError:
        raise SpecError(
            "the payloads of this request make tensors of different shapes; send them in separate requests"
        ) from None


def _rows(outputs: Arrays, tensors: Arrays, batched: bool) -> list[Arrays]:
    """The batch's outputs split back into one ``{name: array}`` per row, each with a batch dimension of 1."""
    if not batched:
        return [{k: v[None] for k, v in outputs.items()}]
    count = len(next(iter(tensors.values())))
    return [{k: v[i : i + 1] for k, v in outputs.items()} for i in range(count)]


def _check_wanted(requested: tuple[RequestedOutput, ...], model: str) -> None:
    unknown = [o.name for o in requested if o.name != OUTPUT]
    if unknown:
        raise InvalidArgumentError(f"model {model!r} has no outputs {unknown}; it has [{OUTPUT!r}]")
    if any(o.classification for o in requested):
        raise InvalidArgumentError(f"output {OUTPUT!r} is the postprocessor's JSON: it takes no classification")


def _selected(outputs: Arrays, request: InferRequest, execution: Execution, batched: bool) -> Arrays:
    """The requested outputs (all when none is named), classified where asked."""
    if not request.outputs:
        return outputs
    unknown = [o.name for o in request.outputs if o.name not in outputs]
    if unknown:
        raise InvalidArgumentError(f"the model has no outputs {unknown}; it has {list(outputs)}")
    return classify({o.name: outputs[o.name] for o in request.outputs}, request.outputs, execution.labels, batched)


def classify(
    outputs: Arrays, requested: tuple[RequestedOutput, ...], labels: dict[str, Labels], batched: bool
) -> Arrays:
    """Triton's classification extension: an output asked for with ``classification: N`` becomes BYTES
    ``[batch, N]`` (``[N]`` without a batch dimension) of ``"<value>:<index>[:<label>]"``, best first."""
    if not requested:  # the usual request: nothing to classify
        return outputs
    counts = {o.name: o.classification for o in requested if o.classification}
    if not counts:
        return outputs
    return {
        name: _classified(value, counts[name], labels.get(name), batched) if name in counts else value
        for name, value in outputs.items()
    }


def _classified(value: np.ndarray[Any, Any], count: int, labels: Labels | None, batched: bool) -> np.ndarray[Any, Any]:
    if count < 0:
        raise InvalidArgumentError(f"classification count must be positive, got {count}")
    if value.dtype.kind not in ("f", "i", "u", "b"):
        raise InvalidArgumentError(f"classification needs a numeric output, not {dtype_of_array(value).v2}")
    per_row = batched and value.ndim > 0  # a [batch] output: one value a row, as Triton reads dims [1]
    rows = value.reshape(len(value), -1) if per_row else value.reshape(1, -1)
    names = labels.names if labels is not None else {}
    classified = [
        [_class_string(row[i], int(i), names.get(int(i))) for i in np.argsort(-row, kind="stable")[:count]]
        for row in rows
    ]
    result = np.array(classified, dtype=object)
    return result if per_row else result.reshape(-1)


def _class_string(value: Any, index: int, label: str | None) -> bytes:
    score = f"{value:f}" if isinstance(value, np.floating) else str(value)
    return (f"{score}:{index}" + (f":{label}" if label is not None else "")).encode()
