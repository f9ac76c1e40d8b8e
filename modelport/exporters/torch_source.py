"""PyTorch sources: ``module:factory`` (+ weights), TorchScript files, ``.pt2`` programs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelport.errors import SourceError, SpecError, summarize
from modelport.exporters.options import ExportOptions
from modelport.exporters.source_model import LoadedModel, check_input_specs, failed_inputs, path_sha256
from modelport.exporters.torch_call import forward_parameters, keyword_call
from modelport.exporters.torch_scripted import math_attention
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays, import_framework
from modelport.runtimes.torch import flatten_outputs, index_fault
from modelport.tensors import dtype_of_array, lookup_dtype

__all__ = ["TorchSource", "load_torch_file", "output_keys", "wrap_torch_factory", "wrap_torch_module"]


@dataclass
class TorchSource(LoadedModel):
    """A PyTorch model in eval mode, called positionally in the order of ``inputs``."""

    framework: Literal["torch", "tf", "onnx"] = "torch"

    def predict(self, inputs: Arrays) -> Arrays:
        torch = import_framework("torch", "torch")
        args = [torch.from_numpy(np.require(inputs[s.name], requirements=("C", "W"))) for s in self.inputs]
        try:
            with torch.inference_mode(), math_attention(torch):
                result = self.model(*args)
        except Exception as exc:
            shapes = failed_inputs(inputs, self.inputs)
            hint = _range_hint(self.inputs) if isinstance(exc, IndexError | RuntimeError) and index_fault(exc) else ""
            raise SourceError(f"the source model failed on inputs {shapes}: {summarize(exc)}{hint}") from exc
        values = [v.detach().numpy() for v in flatten_outputs(result)]
        return _name_outputs(values, self.output_names or _dict_names(result, len(values)))


def _range_hint(specs: tuple[TensorSpec, ...]) -> str:
    """Integer inputs without a value range get golden ids 0..9: an embedding with fewer rows fails on them."""
    unbounded = [s for s in specs if s.value_range is None and not lookup_dtype(s.dtype).is_float]
    if not unbounded:
        return ""
    example = unbounded[0]
    return (
        f"; integer inputs without a value range get golden values 0 to 9: give the model's range, "
        f"e.g. --input {example.describe()}:0..VOCAB_SIZE"
    )


def output_keys(result: Any) -> list[str]:
    """The names litert-torch gives a module's outputs, in flattening order: a dict's keys (nested
    keys joined by ``_``, list items by ``_<index>``), else ``output_<i>``."""
    if not isinstance(result, dict):
        return [f"output_{i}" for i in range(len(flatten_outputs(result)))]
    return [name for key, value in result.items() for name in _leaf_names(str(key), value)]


def _leaf_names(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _leaf_names(f"{prefix}_{k}", v)]
    if isinstance(value, tuple | list):
        return [n for i, v in enumerate(value) for n in _leaf_names(f"{prefix}_{i}", v)]
    return [prefix]


def _dict_names(result: Any, count: int) -> tuple[str, ...]:
    """A returned dict's keys, or a returned named tuple's fields, name the outputs when no names were given (and
    they are unique)."""
    names = output_keys(result) if isinstance(result, dict) else []
    fields: Any = getattr(type(result), "_fields", None) if isinstance(result, tuple) else None
    if fields:
        names = [n for field, value in zip(fields, result, strict=False) for n in _leaf_names(str(field), value)]
    return tuple(names) if len(set(names)) == count == len(names) else ()


def wrap_torch_factory(model: Any, target: str, options: ExportOptions) -> TorchSource:
    """Wrap the module a ``module:factory`` returned, after loading ``--weights`` into it."""
    torch = import_framework("torch", "torch")
    sha = None
    if options.weights is not None:
        _load_weights(torch, model, options.weights)
        sha = path_sha256(options.weights)
    source = wrap_torch_module(model, options, kind="factory", location=target)
    source.sha256 = sha
    return source


def load_torch_file(path: Path, options: ExportOptions) -> TorchSource:
    """Load a TorchScript archive or a torch.export ``.pt2`` program as the source."""
    torch = import_framework("torch", "torch")
    found: tuple[TensorSpec, ...] = ()
    try:
        if path.suffix == ".pt2":
            program = torch.export.load(str(path))
            found = _specs_from_program(torch, program) or _specs_from_examples(program.example_inputs)
            model, kind = program.module(), "pt2"
        else:
            model, kind = torch.jit.load(str(path), map_location="cpu").eval(), "torchscript"
    except Exception as exc:
        raise SourceError(f"cannot load {path} as TorchScript or torch.export program: {summarize(exc)}") from exc
    inputs = check_input_specs(options.inputs, found, str(path))
    return _make_source(model, options, kind, str(path), inputs, path_sha256(path))


def wrap_torch_module(model: Any, options: ExportOptions, kind: str, location: str) -> TorchSource:
    """Wrap an ``nn.Module``; input specs come from flags or a ``input_specs`` attribute. Inputs named after
    ``forward``'s parameters are passed by keyword (``torch_call``)."""
    model = _uncompiled(model)
    declared = getattr(model, "input_specs", None)
    found = tuple(s if isinstance(s, TensorSpec) else TensorSpec.parse(str(s)) for s in declared or ())
    inputs = check_input_specs(options.inputs, found, location)
    source = _make_source(model.eval(), options, kind, location, inputs, None)
    source.model = keyword_call(source.model, inputs, location)
    return source


def _uncompiled(model: Any) -> Any:
    """The module a ``torch.compile`` wrapped: its code is what every format exports. Its ``OptimizedModule``
    (a speed-up of eager calls) cannot be traced, scripted or exported ("Detected that you are using FX to
    torch.jit.trace a dynamo-optimized function")."""
    original = getattr(model, "_orig_mod", None)
    compiled = type(model).__name__ == "OptimizedModule" and type(model).__module__.startswith("torch._dynamo")
    return original if compiled and original is not None else model


def _make_source(
    model: Any, options: ExportOptions, kind: str, location: str, inputs: tuple[TensorSpec, ...], sha: str | None
) -> TorchSource:
    if not inputs:
        raise SpecError(
            f"{location}: PyTorch models do not carry input specs; pass --input NAME:DTYPE:SHAPE "
            f"(e.g. --input image:float32:-1x1x8x8) or give the module an input_specs attribute{_forward_hint(model)}"
        )
    declared = getattr(model, "output_names", None)
    outputs = options.output_names or tuple(declared or ())
    return TorchSource(model, kind, location, inputs, tuple(outputs), sha, compute_dtype=_compute_dtype(model))


def _compute_dtype(model: Any) -> str:
    """float16 or bfloat16 when a parameter or buffer holds one (a ``model.half()``), else float32."""
    tensors = [*model.parameters(), *model.buffers()] if hasattr(model, "parameters") else []
    reduced = sorted({str(t.dtype).removeprefix("torch.") for t in tensors} & {"float16", "bfloat16"})
    return reduced[0] if reduced else "float32"


def _forward_hint(model: Any) -> str:
    """What the module's ``forward`` takes, to name the ``--input`` flags after (they are passed by keyword)."""
    names = forward_parameters(model)
    more = ", ..." if len(names) > 6 else ""
    return (
        f"; its forward takes {', '.join(names[:6])}{more}: inputs named after them are passed by keyword"
        if names
        else ""
    )


def _load_weights(torch: Any, model: Any, path: Path) -> None:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SourceError(f"weights file {path} not found") from None
    except Exception as exc:
        raise SourceError(f"cannot load weights {path} (weights_only=True): {summarize(exc)}") from exc
    if not isinstance(state, dict):
        raise SourceError(f"weights {path} hold a {type(state).__qualname__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = _state_mismatch(model.state_dict(), state) or summarize(exc)
        raise SourceError(f"weights {path} do not fit {type(model).__qualname__}: {detail}") from exc


def _state_mismatch(expected: dict[str, Any], given: dict[str, Any], shown: int = 3) -> str:
    """What differs between the model's state_dict and the file's: missing and unexpected keys, shapes."""

    def listed(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {list(given[k].shape)} (the model has {list(v.shape)})"
        for k, v in expected.items()
        if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{label}: {listed(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes))
        if keys
    ]
    return "; ".join(parts)


def _specs_from_program(torch: Any, program: Any) -> tuple[TensorSpec, ...]:
    """The program's user inputs: their names (the forward's parameters), dtypes, and shapes with the
    dimensions it was exported dynamic as ``-1`` (its example inputs only show one concrete shape)."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    values = [placeholders[name].meta.get("val") for name in program.graph_signature.user_inputs]
    if not values or any(not isinstance(v, torch.Tensor) for v in values):
        return ()
    return tuple(
        TensorSpec(
            name=name,
            dtype=dtype_of_array(torch.empty(0, dtype=value.dtype).numpy()).name,
            shape=tuple(d if isinstance(d, int) else -1 for d in value.shape),
        )
        for name, value in zip(program.graph_signature.user_inputs, values, strict=True)
    )


def _specs_from_examples(examples: Any) -> tuple[TensorSpec, ...]:
    if not examples:
        return ()
    args = examples[0] if isinstance(examples, tuple) and len(examples) == 2 else examples
    specs = []
    for i, tensor in enumerate(args):
        array = tensor.detach().numpy()
        specs.append(TensorSpec(name=f"input_{i}", dtype=dtype_of_array(array).name, shape=tuple(array.shape)))
    return tuple(specs)


def _name_outputs(values: list[np.ndarray[Any, Any]], names: tuple[str, ...]) -> Arrays:
    if names and len(names) != len(values):
        raise SpecError(f"the model returns {len(values)} outputs but {len(names)} output names were given")
    keys = names or tuple(f"output_{i}" for i in range(len(values)))
    return dict(zip(keys, values, strict=True))
