"""Pipeline models: a DAG of served models and processors, served like a model (Triton ensemble semantics).

A pipeline (``pipeline:`` in a model folder's ``config.yaml``, see :mod:`modelport.serving.pipeline_spec`)
has one version, 1. Its graph is checked when it is built; a bad graph leaves it FAILED with the reason.
Its readiness follows its steps: it is ready while every step model is ready and has the tensors its
maps name, its tensors agree in datatype and shape where they meet (:mod:`~modelport.serving.pipeline_types`)
and its ``pre`` steps could be built for the model inputs they feed
(:mod:`~modelport.serving.pipeline_processors`), and otherwise says which step or tensor is not and why.

A request runs the steps level by level (independent steps concurrently); a model step goes through
the data plane's path of that model (validation, its own batcher), so concurrent pipeline requests
batch in each step model; a processor step runs in the data plane's processing pool. A failing step
fails its request alone with its own error. At most ``max_inflight`` requests run at once; more are
refused with a 503 and Retry-After, as a full queue is. Pipelines do not nest.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from modelport.errors import (
    InferenceError,
    InvalidArgumentError,
    ModelNotReadyError,
    ModelportError,
    NotFoundError,
    PayloadTooLargeError,
    SpecError,
    UnavailableError,
    summarize,
)
from modelport.manifest import ModelManifest, TensorSpec
from modelport.processing import ProcessingContext, Processors, build_processors
from modelport.processing.fitting import probe_feeds
from modelport.serving.application import OUTPUT, Applications, classify
from modelport.serving.modelconfig import EnsembleStep, ModelConfiguration
from modelport.serving.pipeline_processors import (
    as_named_by_the_pipeline,
    as_sent_to_the_pipeline,
    class_labels,
    fed_inputs,
    json_tensors,
    reading_defaults,
)
from modelport.serving.pipeline_samples import SampleCheck
from modelport.serving.pipeline_spec import PipelineSpec, PipelineStep, plan
from modelport.serving.pipeline_types import tensor_problem
from modelport.serving.settings import VersionPolicy
from modelport.serving.types import (
    InferRequest,
    InferResponse,
    ModelDetails,
    ModelMetadata,
    RequestedOutput,
    TensorMetadata,
    VersionState,
    VersionStatus,
)
from modelport.tensors import Arrays, dtype_of_array, lookup_dtype, shape_matches

__all__ = ["FORMAT", "VERSION", "Pipeline", "Pipelines", "StepPlane"]

FORMAT = "pipeline"  # the format metadata shows (v2 platform ``ensemble``, as Triton shows an ensemble)
VERSION = 1  # a pipeline's one version
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class StepPlane(Protocol):
    """What a pipeline needs of the data plane: its step models' metadata, readiness and inference path."""

    def model_metadata(self, name: str, version: str | None = None, ready_only: bool = False) -> ModelMetadata: ...

    def model_ready(self, name: str, version: str | None = None) -> tuple[bool, str]: ...

    def step_manifest(self, name: str, version: str | None = None) -> ModelManifest | None: ...

    async def infer_step(self, name: str, version: str | None, request: InferRequest) -> InferResponse: ...


class Pipeline:
    """One pipeline as built from its spec: its levels of steps, its built processors, its requests in flight."""

    def __init__(
        self, name: str, spec: PipelineSpec, directory: Path | None, applications: Applications, samples: bool = True
    ) -> None:
        self.name, self.spec, self.directory = name, spec, directory
        self.in_flight = 0
        self._applications = applications
        self.levels: tuple[tuple[int, ...], ...] = ()
        self.processors: dict[int, Processors] = {}
        self._fitted: dict[int, tuple[tuple[TensorSpec, ...], str]] = {}  # pre step: the inputs it fits, why not
        self.samples = SampleCheck(spec, None, enabled=False)
        self.error = ""
        self.labels = class_labels(spec, directory)
        self._json_tensors = json_tensors(spec, {})
        try:
            self.levels = plan(spec)
            self.processors = self._build_processors()
            self.samples = SampleCheck(spec, directory, enabled=samples)
        except ModelportError as exc:
            self.error = exc.message
        except Exception as exc:  # a custom processor's import, a labels file
            self.error = f"cannot build its processors: {summarize(exc)}"

    def _build_processors(self) -> dict[int, Processors]:
        context = ProcessingContext(self.directory or Path("."))
        return {i: build_processors(reading_defaults(step), context) for i, step in self._processor_steps()}

    def _processor_steps(self) -> list[tuple[int, PipelineStep]]:
        return [(i, step) for i, step in enumerate(self.spec.steps) if step.processors is not None]

    def _fit_pre_steps(self, plane: StepPlane) -> str:
        """Build each ``pre`` step for the model inputs it feeds, as a model's own processors are built for its
        manifest (the ids' dtype, an image's layout and normalization); why one cannot be (empty: all were).
        Each is built once for the inputs it feeds (again when they change), its failure remembered too."""
        for index, step in self._processor_steps():
            assert step.processors is not None
            fed = fed_inputs(plane.step_manifest, self.spec, step) if step.processors.pre else None
            if fed is None:
                continue
            fitted = self._fitted.get(index)
            if fitted is None or fitted[0] != fed.inputs:
                fitted = self._fitted[index] = (fed.inputs, self._fit(index, step, fed))
            if fitted[1]:
                return fitted[1]
        return ""

    def _fit(self, index: int, step: PipelineStep, fed: ModelManifest) -> str:
        assert step.processors is not None
        context = ProcessingContext(self.directory or Path("."), fed)
        try:
            self.processors[index] = build_processors(step.processors, context)
            probe_feeds(step.processors, fed, self.processors[index])  # else every request would be a 400
        except ModelportError as exc:
            return f"{step.label(index)}: {exc.message}"
        except Exception as exc:  # a custom processor's import
            return f"{step.label(index)}: cannot build its processors: {summarize(exc)}"
        return ""

    def status(self, plane: StepPlane) -> VersionStatus:
        """READY while the graph is sound, every step model serves what its maps name and the golden samples
        passed; else FAILED and why (LOADING while its samples run: the first look starts them)."""
        if self.error:
            return VersionStatus(VERSION, VersionState.FAILED, self.error)
        for index, step in enumerate(self.spec.steps):
            reason = _step_problem(plane, index, step) if step.model is not None else ""
            if reason:
                return VersionStatus(VERSION, VersionState.FAILED, reason)
        models = self._step_models(plane)
        reason = tensor_problem(self.spec, models) or self._fit_pre_steps(plane)
        if reason:
            return VersionStatus(VERSION, VersionState.FAILED, reason)
        self._json_tensors = json_tensors(self.spec, models)
        self.samples.start(lambda inputs: self._execute(plane, inputs))
        return VersionStatus(VERSION, *self.samples.state())

    def _step_models(self, plane: StepPlane) -> dict[int, ModelMetadata]:
        """Each model step's metadata (the steps were found ready)."""
        return {
            i: plane.model_metadata(step.model, str(step.version) if step.version is not None else None)
            for i, step in enumerate(self.spec.steps)
            if step.model is not None
        }

    async def verify(self, plane: StepPlane) -> None:
        """Check the golden samples now if the steps are ready and they have not run (at server start)."""
        if self.status(plane).state is VersionState.LOADING:
            task = self.samples.start(lambda inputs: self._execute(plane, inputs))
            if task is not None:
                await asyncio.shield(task)

    def metadata(self, plane: StepPlane) -> ModelMetadata:
        """The pipeline as a model: its own inputs and outputs (one BYTES input: it takes payloads)."""
        inputs, outputs = _tensors(self.spec.inputs), _tensors(self.spec.outputs)
        payloads = len(inputs) == 1 and inputs[0].dtype == "string"
        status = self.status(plane)
        return ModelMetadata(
            self.name, (VERSION,), status, format=FORMAT, inputs=inputs, outputs=outputs, processed=payloads
        )

    def configuration(self) -> ModelConfiguration:
        """The pipeline as Triton's model configuration shows an ensemble: its tensors and its steps."""
        if self.error:
            raise ModelNotReadyError(f"pipeline {self.name!r} is not ready: {self.error}")
        tensors = [
            tuple(TensorSpec(name=t.name, dtype=t.datatype, shape=t.shape) for t in s)
            for s in (self.spec.inputs, self.spec.outputs)
        ]
        return ModelConfiguration(
            name=self.name,
            version=VERSION,
            format=FORMAT,
            artifact="",
            max_batch_size=0,
            inputs=tensors[0],
            outputs=tensors[1],
            preferred_batch_sizes=(),
            max_queue_delay_us=0,
            max_queue_size=self.spec.max_inflight,
            instances=1,
            device="cpu",
            version_policy=VersionPolicy(),
            ensemble=tuple(_ensemble_step(step) for step in self.spec.steps if step.model is not None),
        )

    def details(self, plane: StepPlane) -> ModelDetails:
        """How the pipeline runs, as TorchServe's describe shows a model (it batches in its steps)."""
        directory = self.directory or Path(".")
        return ModelDetails(self.name, self.status(plane), directory, FORMAT, 1, 0, 0.0, False)

    async def infer(self, plane: StepPlane, request: InferRequest) -> InferResponse:
        """Run the steps on the request's inputs and answer the pipeline's (requested) outputs."""
        status = self.status(plane)
        if status.state is not VersionState.READY:
            raise ModelNotReadyError(f"pipeline {self.name!r} is not ready: {status.reason}")
        if self.in_flight >= self.spec.max_inflight:
            raise UnavailableError(
                f"pipeline {self.name!r} has {self.in_flight} requests in flight (max_inflight); retry later",
                retry_after=1.0,
            )
        self.in_flight += 1
        try:
            return self._answer(await self._execute(plane, request.inputs), request)
        finally:
            self.in_flight -= 1

    async def _execute(self, plane: StepPlane, inputs: Arrays) -> Arrays:
        """Every step, level by level, on validated ``inputs``; all the pipeline's tensors."""
        tensors = self._validate(inputs)
        for level in self.levels:
            produced = await asyncio.gather(*(self._step(plane, i, tensors) for i in level), return_exceptions=True)
            for result in produced:
                if isinstance(result, BaseException):
                    raise result
            for result in produced:
                tensors.update(result)  # type: ignore[arg-type]  # exceptions raised above
        return tensors

    def _validate(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        """The request's inputs checked against the pipeline's own (names, datatypes, shapes)."""
        expected = {t.name: t for t in self.spec.inputs}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise InvalidArgumentError(
                f"pipeline {self.name!r} takes inputs {list(expected)}; missing {missing}, unexpected {extra}"
            )
        for name, value in inputs.items():
            spec, got = expected[name], dtype_of_array(value)
            if got.name != spec.datatype:
                want = lookup_dtype(spec.datatype).v2
                raise SpecError(f"input {name!r}: datatype {got.v2} does not match the pipeline's {want}")
            if not shape_matches(spec.shape, value.shape):
                raise SpecError(f"input {name!r}: shape {list(value.shape)} does not match {list(spec.shape)}")
        return dict(inputs)

    async def _step(self, plane: StepPlane, index: int, tensors: Arrays) -> Arrays:
        """One step on its mapped inputs; its mapped outputs, named as the pipeline names them."""
        step = self.spec.steps[index]
        inputs = {mine: tensors[theirs] for mine, theirs in step.input_map.items()}
        if step.model is not None:
            version = str(step.version) if step.version is not None else None
            wanted = tuple(RequestedOutput(name) for name in step.output_map)
            try:
                outputs = (await plane.infer_step(step.model, version, InferRequest(inputs, outputs=wanted))).outputs
            except (InvalidArgumentError, PayloadTooLargeError) as exc:
                raise as_sent_to_the_pipeline(exc, step, {t.name for t in self.spec.inputs}) from None
        else:
            outputs = await self._process(index, inputs)
        missing = [name for name in step.output_map if name not in outputs]
        if missing:
            raise InferenceError(f"{step.label(index)} did not produce {missing}; it produced {sorted(outputs)}")
        return {theirs: outputs[mine] for mine, theirs in step.output_map.items()}

    async def _process(self, index: int, inputs: Arrays) -> Arrays:
        """A processor step: ``pre`` decodes each element of its one BYTES input into tensors (concatenated);
        ``post`` formats each row of its inputs as a JSON response (one BYTES ``output`` element a row)."""
        processors, key = self.processors[index], (self.name, str(VERSION))
        if processors.pre:
            step = self.spec.steps[index]
            payloads = _payloads(inputs, step.label(index))
            try:
                rows = await self._applications.process(processors.preprocess, payloads, "pre", key)
            except (InvalidArgumentError, PayloadTooLargeError) as exc:
                raise as_named_by_the_pipeline(exc, step) from None
            return _concatenate(rows)
        count = len(next(iter(inputs.values())))
        rows = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(count)]
        results = await self._applications.process(processors.postprocess, rows, "post", key)
        return {OUTPUT: np.array([orjson.dumps(r, option=_JSON_OPTIONS) for r in results], dtype=object)}

    def _answer(self, tensors: Arrays, request: InferRequest) -> InferResponse:
        """The requested outputs (all when none is named); one JSON output also answers as ``results``."""
        names = [t.name for t in self.spec.outputs]
        unknown = [o.name for o in request.outputs if o.name not in names]
        if unknown:
            raise InvalidArgumentError(f"pipeline {self.name!r} has no outputs {unknown}; it has {names}")
        wanted = [o.name for o in request.outputs] or names
        selected = classify({n: tensors[n] for n in wanted}, request.outputs, self.labels, True)
        results = None
        if len(wanted) == 1 and self._from_post(wanted[0]):
            results = [orjson.loads(element) for element in selected[wanted[0]].ravel().tolist()]
        json_outputs = tuple(n for n in wanted if self._from_post(n))
        return InferResponse(
            self.name, str(VERSION), selected, id=request.id, results=results, json_outputs=json_outputs
        )

    def _from_post(self, tensor: str) -> bool:
        """Whether a pipeline tensor is postprocessors' JSON (a ``post`` step's, or a processed model's)."""
        return tensor in self._json_tensors


class Pipelines:
    """The pipelines the data plane serves, built from their spec when first asked for, rebuilt when it changes."""

    def __init__(self, applications: Applications, samples: bool = True) -> None:
        self._applications = applications
        self._samples = samples  # check golden samples (the server's golden_check)
        self._built: dict[str, Pipeline] = {}

    def get(self, name: str, spec: PipelineSpec, directory: Path | None) -> Pipeline:
        """The pipeline ``name`` as ``spec`` says now (requests in flight keep the one they started on)."""
        built = self._built.get(name)
        if built is None or built.spec != spec or built.directory != directory:
            built = self._built[name] = Pipeline(name, spec, directory, self._applications, self._samples)
        return built


def _ensemble_step(step: PipelineStep) -> EnsembleStep:
    """A model step as an ensemble's step. Processors steps are no models, so they are not listed: Triton's
    clients (perf_analyzer, model_analyzer) ask every step's model for its configuration and statistics."""
    assert step.model is not None
    return EnsembleStep(step.model, step.version or -1, dict(step.input_map), dict(step.output_map))


def _step_problem(plane: StepPlane, index: int, step: PipelineStep) -> str:
    """Why a model step cannot run now (empty: it can)."""
    assert step.model is not None
    label, version = step.label(index), str(step.version) if step.version is not None else None
    try:
        meta = plane.model_metadata(step.model, version)
        ready, reason = plane.model_ready(step.model, version)
    except NotFoundError as exc:
        return f"{label}: {exc.message}"
    except ModelportError as exc:
        return f"{label}: model {step.model!r} is not ready: {exc.message}"
    if meta.format == FORMAT:
        return f"{label}: model {step.model!r} is a pipeline; pipelines do not nest"
    if not ready:
        return f"{label}: model {step.model!r} is not ready" + (f": {reason}" if reason else "")
    return _map_problem(label, step, meta)


def _map_problem(label: str, step: PipelineStep, meta: ModelMetadata) -> str:
    """Whether the step's maps name exactly the model's inputs and some of its outputs."""
    inputs, outputs = [t.name for t in meta.inputs], [t.name for t in meta.outputs]
    unknown = sorted(set(step.input_map) - set(inputs))
    unfed = sorted(set(inputs) - set(step.input_map))
    if unknown or unfed:
        return f"{label}: model {meta.name!r} takes inputs {inputs}; input_map names {unknown}, leaves out {unfed}"
    absent = sorted(set(step.output_map) - set(outputs))
    if absent:
        return f"{label}: model {meta.name!r} has no outputs {absent}; it has {outputs}"
    return ""


def _tensors(specs: tuple[Any, ...]) -> tuple[TensorMetadata, ...]:
    return tuple(TensorMetadata(t.name, t.datatype, tuple(t.shape), t.name) for t in specs)


def _payloads(inputs: Arrays, label: str) -> list[object]:
    """A ``pre`` step's payloads: the elements of its one BYTES input."""
    (value,) = inputs.values()  # input_map has one entry: checked when the step's processors were built
    if value.dtype.kind not in ("O", "S", "U"):
        raise SpecError(f"{label}: payloads come as BYTES, not {dtype_of_array(value).v2}")
    items: list[object] = [str(x) if isinstance(x, np.str_) else x for x in value.ravel().tolist()]
    if not items:
        raise SpecError(f"{label}: no payload (the tensor is empty)")
    return items


def _concatenate(rows: list[Any]) -> Arrays:
    """A ``pre`` step's rows (each with a batch dimension of 1) as one batch."""
    try:
        return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}
    except ValueError:
        raise SpecError("the payloads of this request make tensors of different shapes") from None
