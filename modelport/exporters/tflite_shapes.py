"""Static TFLite input shapes: the ones a user chose (``--tflite-shape``) and the ones a converter pinned.

litert-torch converts at one static shape, and a Keras LSTM converts only with a static batch:
such an artifact refuses every other shape at serve time. The user chooses the shape with
``--tflite-shape NAME:SHAPE``; a shape pinned without being chosen becomes a note on the
variant's report row, so it is not first learned from a 400.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelport.errors import InvalidArgumentError, SpecError, UnsupportedError
from modelport.exporters.source_model import SourceModel
from modelport.golden import concrete_shape
from modelport.manifest import TensorSpec
from modelport.tensors import Shape, format_shape, shape_matches

__all__ = ["FLAG", "check_tflite_shapes", "chosen_shapes", "filled_shapes", "pinned_notes", "with_followers"]

FLAG = "--tflite-shape"


def check_tflite_shapes(source: SourceModel, chosen: Mapping[str, Shape], formats: set[str]) -> None:
    """Refuse, before any conversion, chosen shapes that no tflite variant uses or that do not fit the model."""
    if not chosen:
        return
    if "tflite" not in formats:
        raise InvalidArgumentError(f"{FLAG} applies to the tflite format, which is not in --format")
    if source.framework == "tf" and source.kind != "keras":
        raise UnsupportedError(
            f"{FLAG} needs a PyTorch or Keras source: a {source.kind} source converts to TFLite "
            "with the shapes of its own signature"
        )
    chosen_shapes(source.inputs, chosen)


def chosen_shapes(specs: tuple[TensorSpec, ...], chosen: Mapping[str, Shape]) -> tuple[TensorSpec, ...]:
    """``specs`` with the chosen inputs' shapes (each must fit the input's own shape)."""
    by_name = {s.name: s for s in specs}
    unknown = [name for name in chosen if name not in by_name]
    if unknown:
        raise SpecError(f"{FLAG} {unknown[0]}: the model has no such input (its inputs: {', '.join(by_name)})")
    for name, shape in chosen.items():
        spec = by_name[name]
        if not shape_matches(spec.shape, shape):
            raise SpecError(f"{FLAG} {name}:{format_shape(shape)} does not fit the input {spec.describe()}")
    return tuple(s.model_copy(update={"shape": tuple(chosen[s.name])}) if s.name in chosen else s for s in specs)


def with_followers(specs: tuple[TensorSpec, ...], chosen: Mapping[str, Shape]) -> dict[str, Shape]:
    """The chosen shapes, plus the shape of each input not chosen that is declared with the shape of one chosen
    (a mask and token types beside their ids, all ``-1x-1``): left dynamic or filled with the defaults, it would
    not fit the others in the model."""
    declared = {s.name: s.shape for s in specs}
    alike: dict[Shape, Shape] = {}
    for name, shape in chosen.items():
        alike.setdefault(declared.get(name, ()), shape)
    following = {s.name: alike[s.shape] for s in specs if -1 in s.shape and s.shape in alike}
    return {**following, **chosen}


def filled_shapes(
    specs: tuple[TensorSpec, ...], chosen: Mapping[str, Shape], batch: int, dynamic: int
) -> tuple[TensorSpec, ...]:
    """Every input static: the chosen shapes (and their followers, :func:`with_followers`), other dynamic dims
    filled with ``batch`` (dim 0) or ``dynamic``."""
    fixed = chosen_shapes(specs, with_followers(specs, chosen))
    return tuple(s.model_copy(update={"shape": concrete_shape(s, batch, dynamic)}) for s in fixed)


def pinned_notes(
    source: tuple[TensorSpec, ...], artifact: tuple[TensorSpec, ...], chosen: Mapping[str, Shape]
) -> tuple[str, ...]:
    """One note per input whose dynamic dims the artifact fixed without the user choosing it (an input that took
    the shape chosen for one declared alike says so: its own flag would have to agree with that one)."""
    notes = []
    declared = {s.name: s.shape for s in source}
    for given, made in zip(source, artifact, strict=True):
        if given.name in chosen or given.shape == made.shape:
            continue
        leader = next((name for name in chosen if declared.get(name) == given.shape), None)
        if leader is not None:
            notes.append(
                f"input {given.name!r} has the fixed shape {format_shape(made.shape)} in this artifact, the shape "
                f"chosen for {leader!r} ({FLAG} {leader}:...), which is declared alike "
                f"({format_shape(given.shape)}): other shapes are refused"
            )
            continue
        notes.append(
            f"input {given.name!r} has the fixed shape {format_shape(made.shape)} in this artifact "
            f"(the source takes {format_shape(given.shape)}): other shapes are refused; "
            f"choose it with {FLAG} {given.name}:SHAPE"
        )
    return tuple(notes)
