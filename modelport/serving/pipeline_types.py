"""A pipeline's tensors checked where they meet: what makes a tensor and what takes it agree on its datatype and shape.

Triton refuses an ensemble whose tensors disagree; a pipeline whose tensors disagree could never answer
(every request a 400 at the step that takes the tensor), so it is not ready and says where the two sides
differ. A pipeline input meets the model inputs it is mapped to; a model output meets the model inputs and
pipeline outputs it is mapped to. Tensors made by processor steps are not known before a request, and are
checked by the model taking them, per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelport.errors import InvalidArgumentError
from modelport.serving.pipeline_spec import PipelineSpec
from modelport.serving.types import ModelMetadata
from modelport.tensors import lookup_dtype

__all__ = ["tensor_problem"]


@dataclass(frozen=True)
class _Side:
    dtype: str
    shape: tuple[int, ...]
    where: str

    def describe(self) -> str:
        return f"{self.where} ({_v2(self.dtype)} {list(self.shape)})"


def tensor_problem(spec: PipelineSpec, models: Mapping[int, ModelMetadata]) -> str:
    """The first tensor whose maker and taker disagree (empty: none); ``models``: each model step's metadata."""
    made = {t.name: _Side(t.datatype, t.shape, f"pipeline input {t.name!r}") for t in spec.inputs}
    for index, meta in models.items():
        step, outputs = spec.steps[index], {t.name: t for t in meta.outputs}
        for mine, theirs in step.output_map.items():
            made[theirs] = _Side(outputs[mine].dtype, outputs[mine].shape, f"{step.label(index)} output {mine!r}")
    for index, meta in models.items():
        step, inputs = spec.steps[index], {t.name: t for t in meta.inputs}
        for mine, theirs in step.input_map.items():
            taker = _Side(inputs[mine].dtype, inputs[mine].shape, f"{step.label(index)} input {mine!r}")
            if theirs in made and not _agree(made[theirs], taker):
                return f"tensor {theirs!r}: {made[theirs].describe()} does not fit {taker.describe()}"
    for output in spec.outputs:
        taker = _Side(output.datatype, output.shape, f"pipeline output {output.name!r}")
        if output.name in made and not _agree(made[output.name], taker):
            return f"tensor {output.name!r}: {made[output.name].describe()} does not fit {taker.describe()}"
    return ""


def _agree(maker: _Side, taker: _Side) -> bool:
    """Same datatype; same rank, each dimension equal or dynamic (-1) on one side."""
    if _name(maker.dtype) != _name(taker.dtype) or len(maker.shape) != len(taker.shape):
        return False
    return all(a == b or -1 in (a, b) for a, b in zip(maker.shape, taker.shape, strict=True))


def _name(dtype: str) -> str:
    try:
        return lookup_dtype(dtype).name
    except InvalidArgumentError:
        return dtype


def _v2(dtype: str) -> str:
    try:
        return lookup_dtype(dtype).v2
    except InvalidArgumentError:
        return dtype
