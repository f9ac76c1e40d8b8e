"""The ``pipeline:`` section of a model's ``config.yaml``: a DAG of steps, as data (Triton ensemble semantics).

A model folder whose ``config.yaml`` holds ``pipeline:`` (and no version folders of its own) is served
as a pipeline, version 1::

    pipeline:
      max_inflight: 64                       # requests in flight at once; more are refused with a 503
      inputs:  [{name: x, datatype: FP32, shape: [-1, 3]}]
      outputs: [{name: quadrupled, datatype: FP32, shape: [-1, 3]}]
      steps:
        - model: echo                        # a served model (optional version: 2)
          input_map: {x: x}                  # the step's tensor -> the pipeline's tensor
          output_map: {y: doubled}
        - model: echo
          input_map: {x: doubled}
          output_map: {y: quadrupled}

A step is either a served ``model`` or ``processors`` (a :class:`ProcessingSpec` with ``pre`` or
``post`` steps). :func:`plan` checks the graph (every consumed tensor produced once, no cycle,
every output produced) and orders the steps in levels that can run concurrently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelport.errors import InvalidArgumentError
from modelport.processing.spec import ProcessingSpec
from modelport.tensors import lookup_dtype

__all__ = ["PipelineSpec", "PipelineStep", "PipelineTensor", "plan"]


class PipelineTensor(BaseModel):
    """One of the pipeline's own inputs or outputs; ``datatype`` in any spelling (``FP32``, ``float32``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    datatype: str
    shape: tuple[int, ...]

    @field_validator("datatype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        try:
            return lookup_dtype(value).name
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from None

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < -1 for d in value):
            raise ValueError(f"dimensions are positive or -1 (dynamic), got {list(value)}")
        return value


class PipelineStep(BaseModel):
    """A served ``model`` (optional ``version``) or ``processors``, its tensors mapped (step -> pipeline)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    version: int | None = Field(None, ge=1)
    processors: ProcessingSpec | None = None
    input_map: dict[str, str] = Field(min_length=1)
    output_map: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _model_or_processors(self) -> PipelineStep:
        if (self.model is None) == (self.processors is None):
            which = "neither" if self.model is None else "both"
            raise ValueError(f"a step names a model or holds processors (this one: {which})")
        if self.version is not None and self.model is None:
            raise ValueError("version: goes with model:")
        if self.processors is not None and bool(self.processors.pre) == bool(self.processors.post):
            raise ValueError("a processors step holds pre or post steps (one of them)")
        if self.processors is not None and self.processors.pre and len(self.input_map) != 1:
            raise ValueError("a pre processors step takes one input: its payloads (BYTES)")
        if self.processors is not None and self.processors.post and set(self.output_map) != {"output"}:
            raise ValueError("a post processors step has one output, output (each row's JSON as BYTES)")
        return self

    def label(self, index: int) -> str:
        """How reasons name the step: ``step 2 (echo)``, counted from 1."""
        kind = self.model if self.model is not None else "processors"
        return f"step {index + 1} ({kind})"


class PipelineSpec(BaseModel):
    """A pipeline: its own inputs and outputs, its steps, and how many requests may be in flight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: tuple[PipelineTensor, ...] = Field(min_length=1)
    outputs: tuple[PipelineTensor, ...] = Field(min_length=1)
    steps: tuple[PipelineStep, ...] = Field(min_length=1)
    max_inflight: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineSpec:
        for side, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:  # the last one was used and metadata listed both
                raise ValueError(f"{side} {twice} named twice")
        return self


def plan(spec: PipelineSpec) -> tuple[tuple[int, ...], ...]:
    """The steps in levels (indexes): each level's steps need only tensors of the inputs and earlier levels.

    Raises ``InvalidArgumentError`` naming the first problem: a tensor produced twice, a tensor consumed
    but never produced, a cycle, or a pipeline output never produced."""
    producers = _producers(spec)
    for index, step in enumerate(spec.steps):
        unknown = sorted(set(step.input_map.values()) - set(producers))
        if unknown:
            raise InvalidArgumentError(
                f"{step.label(index)} consumes {unknown}, which no step produces and the pipeline does not take"
            )
    missing = [t.name for t in spec.outputs if producers.get(t.name, -1) < 0]
    if missing:
        raise InvalidArgumentError(f"pipeline outputs {missing} are never produced by a step")
    needs = {i: {producers[t] for t in s.input_map.values()} - {-1} for i, s in enumerate(spec.steps)}
    return _levels(spec, needs)


def _producers(spec: PipelineSpec) -> dict[str, int]:
    """Each pipeline tensor and the step producing it (-1: a pipeline input)."""
    producers = {t.name: -1 for t in spec.inputs}
    for index, step in enumerate(spec.steps):
        for tensor in step.output_map.values():
            if tensor in producers:
                first = (
                    "the pipeline's inputs"
                    if producers[tensor] < 0
                    else spec.steps[producers[tensor]].label(producers[tensor])
                )
                raise InvalidArgumentError(f"{step.label(index)} produces {tensor!r}, already produced by {first}")
            producers[tensor] = index
    return producers


def _levels(spec: PipelineSpec, needs: dict[int, set[int]]) -> tuple[tuple[int, ...], ...]:
    """Kahn's algorithm, level by level; steps left over form a cycle."""
    done: set[int] = set()
    levels: list[tuple[int, ...]] = []
    while len(done) < len(needs):
        level = tuple(i for i in sorted(needs) if i not in done and needs[i] <= done)
        if not level:
            cycle = ", ".join(spec.steps[i].label(i) for i in sorted(set(needs) - done))
            raise InvalidArgumentError(f"the steps form a cycle: {cycle}")
        levels.append(level)
        done.update(level)
    return tuple(levels)
