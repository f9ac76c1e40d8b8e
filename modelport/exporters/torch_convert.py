"""PyTorch converters: ONNX (torch.export-based or legacy), TorchScript, torch.export, TFLite."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConversionError
from modelport.exporters.artifact import (
    ARTIFACT_FILES,
    Artifact,
    ConvertContext,
    describe_failure,
    frameworks,
    map_native,
)
from modelport.exporters.tflite_limits import (
    complex_failure,
    cond_failure,
    data_dependent_failure,
    float16_failure,
    missing_kernel,
    transposed_conv_failure,
)
from modelport.exporters.tflite_shapes import filled_shapes, pinned_notes
from modelport.exporters.torch_call import plain_outputs, takes_args
from modelport.exporters.torch_scripted import (
    BRANCH_ADVICE,
    check_no_script_submodules,
    math_attention,
    script_after_trace,
    script_submodules,
    value_branch,
)
from modelport.exporters.torch_source import output_keys
from modelport.golden import random_inputs
from modelport.runtimes.base import import_framework

__all__ = ["to_onnx", "to_pt2", "to_tflite", "to_torchscript"]


def _args(ctx: ConvertContext, torch: Any, batch: int = 2) -> tuple[Any, ...]:
    inputs = ctx.example_inputs(batch)
    # np.require keeps a 0-d scalar input 0-d (np.ascontiguousarray makes it 1-d: the program would want rank 1)
    return tuple(torch.from_numpy(np.require(inputs[s.name], requirements=("C", "W"))) for s in ctx.source.inputs)


def _dynamic_shapes(ctx: ConvertContext, torch: Any, model: Any) -> tuple[Any, ...]:
    auto = torch.export.Dim.AUTO
    shapes = tuple({i: auto for i, d in enumerate(s.shape) if d == -1} for s in ctx.source.inputs)
    return (shapes,) if takes_args(model) else shapes  # its forward(*args) has one argument: the shapes nest


@contextlib.contextmanager
def _rnn_loops(torch: Any, ctx: ConvertContext) -> Iterator[None]:
    """Trace LSTM/GRU as ``while_loop`` (as ``torch.onnx`` does) so a dynamic sequence length stays dynamic.

    The default decomposition unrolls over the example's length and bakes it in. The patches swap the
    ops' Python kernels but not the ops' dispatch caches, which an earlier export may have filled with
    the unrolling kernel: the caches are cleared around the swap.
    """
    if not any(-1 in s.shape for s in ctx.source.inputs):
        yield
        return
    from torch.export._patches import register_gru_while_loop_decomposition, register_lstm_while_loop_decomposition

    ops = (torch.ops.aten.lstm.input, torch.ops.aten.gru.input)
    try:
        with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
            _clear_dispatch_caches(ops)
            yield
    finally:
        _clear_dispatch_caches(ops)


def _clear_dispatch_caches(ops: tuple[Any, ...]) -> None:
    for op in ops:
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def _check_fx_names(ctx: ConvertContext, torch: Any) -> None:
    """torch.export holds the module's top-level submodules, parameters and buffers as attributes of a torch.fx
    GraphModule: one named like an attribute the GraphModule has itself (``meta``, ``graph``, ``code``...) is
    lost, and the export fails, or writes a program that does not load, with a message that does not say why."""
    model = ctx.source.model
    if not isinstance(model, torch.nn.Module):
        return
    graph_module, plain = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph()), torch.nn.Module()
    names = [n for n, _ in (*model.named_children(), *model.named_parameters(recurse=False))]
    names += [n for n, _ in model.named_buffers(recurse=False)]
    clashes = [n for n in names if hasattr(graph_module, n) and not hasattr(plain, n)]
    if clashes:
        listed = ", ".join(repr(n) for n in clashes)
        raise ConversionError(
            f"the model's attribute(s) {listed} have the name of an attribute of torch.fx.GraphModule, which "
            f"torch.export (behind pt2, tflite and the default onnx exporter) builds from the model: rename them "
            f"in the model (e.g. {clashes[0] + '_'!r})"
        )


def _check_not_quantized(ctx: ConvertContext, torch: Any) -> None:
    """A torch.ao quantized module (``quantize_dynamic``'s Linear) holds its weights packed in a TorchScript object
    that torch.export cannot trace ("LinearPackedParamsBase ... does not have a field with name '__obj_flatten__'")."""
    model = ctx.source.model
    if not isinstance(model, torch.nn.Module):
        return
    quantized = [
        (n, type(m)) for n, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")
    ]
    if quantized:
        name, kind = quantized[0]
        raise ConversionError(
            f"the model holds torch.ao quantized modules (e.g. {name!r}: {kind.__module__}.{kind.__qualname__}), whose "
            f"packed weights torch.export (behind pt2, tflite and the default onnx exporter) cannot trace: export the "
            f"float model and let modelport quantize it (--quantize dynamic-int8, for onnx and tflite)"
        )


def _output_names(ctx: ConvertContext) -> list[str]:
    inputs = ctx.example_inputs(1)
    return list(ctx.source.predict(inputs))


def to_onnx(ctx: ConvertContext, _: str) -> Artifact:
    """torch.onnx export: dynamo (torch.export + onnxscript) unless ``legacy_onnx``, falling back to the
    TorchScript-based exporter when it fails (a note on the report row says so and why)."""
    torch = import_framework("torch", "torch")
    path = ctx.subdir("onnx") / ARTIFACT_FILES["onnx"]
    input_names = [s.name for s in ctx.source.inputs]
    output_names = _output_names(ctx)
    common: dict[str, Any] = {
        "input_names": input_names,
        "output_names": output_names,
        "opset_version": ctx.options.opset,
    }
    legacy = ctx.options.legacy_onnx or ctx.source.kind == "torchscript"  # torch.export cannot take ScriptModules
    notes: tuple[str, ...] = ()
    if legacy:
        _legacy_onnx(ctx, torch, path, common)
    else:
        try:
            _dynamo_onnx(ctx, torch, path, common)
        except Exception as exc:  # the TorchScript-based exporter covers ops the dynamo one lacks; the gate checks it
            why = describe_failure(exc)
            try:
                scripted = _legacy_onnx_of_branches(ctx, torch, path, common, exc)
                if not scripted:
                    _legacy_onnx(ctx, torch, path, common)
            except Exception as second:
                raise ConversionError(
                    f"the torch.export-based exporter failed: {why}; the TorchScript-based one (--legacy-onnx) "
                    f"too: {describe_failure(second)}"
                ) from exc
            legacy = True
            how = "from torch.jit.script, which keeps the branch as an ONNX If" if scripted else ""
            notes = (
                f"exported with the TorchScript-based ONNX exporter{' ' + how if how else ''}: the "
                f"torch.export-based one failed ({why})",
            )
    graph = _graph_with_inputs(path, input_names)
    return Artifact(
        path,
        ctx.source.inputs,
        {},
        {
            **frameworks("torch", "onnx"),
            "opset": str(ctx.options.opset),
            "exporter": "legacy" if legacy else "dynamo",
            "ir_version": str(graph.ir_version),
        },
        notes,
    )


def _graph_with_inputs(path: Path, names: list[str]) -> Any:
    """The exported ONNX model, refused when an input is not in its graph: the exporter folded it into a constant
    (the server would feed it and onnxruntime answer every request "Invalid input name")."""
    onnx = import_framework("onnx", "torch")
    model = onnx.load(str(path), load_external_data=False)
    present = {value.name for value in model.graph.input}
    missing = [name for name in names if name not in present]
    if missing:
        raise ConversionError(
            f"the exported ONNX graph has no input {', '.join(map(repr, missing))}: the exporter made it a constant, "
            f"as the model reads its value in Python (a bool flag, an `if` on it) or does not use it; leave it out of "
            f"the inputs (forward's default is used) or compute with it as a tensor (torch.where)"
        )
    return model


def _legacy_onnx(ctx: ConvertContext, torch: Any, path: Path, common: dict[str, Any]) -> None:
    """The TorchScript-based ``torch.onnx`` exporter, every ``-1`` dim a named dynamic axis. A model holding a
    scripted submodule is traced first: torch.onnx's own trace refuses one ("not part of the active trace")."""
    axes = {s.name: {i: f"{s.name}_d{i}" for i, d in enumerate(s.shape) if d == -1} for s in ctx.source.inputs}
    model = ctx.source.model
    if script_submodules(torch, model):
        model = torch.jit.trace(model, _args(ctx, torch), check_trace=False, strict=False)
    torch.onnx.export(model, _args(ctx, torch), str(path), dynamo=False, dynamic_axes=axes, **common)


def _legacy_onnx_of_branches(
    ctx: ConvertContext, torch: Any, path: Path, common: dict[str, Any], exc: BaseException
) -> bool:
    """For a model that branches on a tensor's value (the failure ``exc`` of torch.export says so), the
    TorchScript-based export of its ``torch.jit.script``: an ONNX If with both sides, where a trace keeps the
    example's side. False (nothing written) for another failure, or a model that does not script."""
    if not value_branch(exc):
        return False
    try:
        scripted = torch.jit.script(ctx.source.model)
    except Exception:
        return False
    axes = {s.name: {i: f"{s.name}_d{i}" for i, d in enumerate(s.shape) if d == -1} for s in ctx.source.inputs}
    torch.onnx.export(scripted, _args(ctx, torch), str(path), dynamo=False, dynamic_axes=axes, **common)
    return True


def _dynamo_onnx(ctx: ConvertContext, torch: Any, path: Path, common: dict[str, Any]) -> None:
    """The torch.export-based ``torch.onnx`` exporter (onnxscript), every ``-1`` dim dynamic."""
    _check_not_quantized(ctx, torch)
    _check_fx_names(ctx, torch)
    check_no_script_submodules(torch, ctx.source.model)
    shapes = _dynamic_shapes(ctx, torch, ctx.source.model)
    with _rnn_loops(torch, ctx):
        program = torch.onnx.export(
            ctx.source.model, _args(ctx, torch), dynamo=True, dynamic_shapes=shapes, verbose=False, **common
        )
    if program is None:
        raise ConversionError("torch.onnx.export returned no program")
    program.save(str(path))


def to_torchscript(ctx: ConvertContext, _: str) -> Artifact:
    """``torch.jit.trace``, falling back to ``torch.jit.script`` for data-dependent control flow."""
    torch = import_framework("torch", "torch")
    path = ctx.subdir("torchscript") / ARTIFACT_FILES["torchscript"]
    try:
        with warnings.catch_warnings(record=True) as caught, math_attention(torch):
            warnings.simplefilter("always", torch.jit.TracerWarning)
            # strict=False: a dict or list result (its structure is fixed by the code; the parity gate checks values)
            module = torch.jit.trace(ctx.source.model, _args(ctx, torch), check_trace=False, strict=False)
    except Exception as exc:
        module = script_after_trace(torch, ctx.source.model, exc)
    else:
        unused = _unused_inputs(ctx, module)
        if unused:
            module = _scripted_instead(ctx, torch, unused)
        elif any("to a Python boolean" in str(w.message) and _user_code(torch, w.filename) for w in caught):
            module = _scripted_branches(ctx, torch) or module
    torch.jit.save(module, str(path))
    return Artifact(path, ctx.source.inputs, {}, frameworks("torch"))


def _user_code(torch: Any, filename: str) -> bool:
    """Whether a trace warning comes from the model's code rather than PyTorch's own modules (nn.TransformerEncoder
    tests its mask's values on its fast path, and traces right)."""
    return not Path(filename).resolve().is_relative_to(Path(torch.__file__).resolve().parent)


def _scripted_branches(ctx: ConvertContext, torch: Any) -> Any:
    """``torch.jit.script`` of a model whose trace turned a tensor into a Python bool (an ``if`` on its value: the
    trace keeps the example's side for every input), when it compiles and runs; else None (the trace stays, and
    the parity gate judges it)."""
    try:
        scripted = torch.jit.script(ctx.source.model)
        with torch.inference_mode():
            scripted(*_args(ctx, torch))
    except Exception:
        return None
    return scripted


def _unused_inputs(ctx: ConvertContext, module: Any) -> list[str]:
    """The inputs a trace does not read: the trace made them constants (a Python ``if`` on a flag's value takes the
    example's side for every input) or the model ignores them."""
    graph_inputs = list(module.graph.inputs())[1:]  # after self
    if len(graph_inputs) != len(ctx.source.inputs):
        return []
    return [s.name for s, value in zip(ctx.source.inputs, graph_inputs, strict=True) if not value.uses()]


def _scripted_instead(ctx: ConvertContext, torch: Any, unused: list[str]) -> Any:
    """``torch.jit.script`` of a model whose trace dropped inputs, or an error naming them: the trace would answer the
    golden inputs' side of a branch on their values whatever a request sends (one golden value passes its gate)."""
    try:
        return torch.jit.script(ctx.source.model)
    except Exception as exc:
        raise ConversionError(
            f"the TorchScript trace does not read input {', '.join(map(repr, unused))}: it made it a constant, as the "
            f"model reads its value in Python (a bool flag, an `if` on it) or does not use it, and torch.jit.script "
            f"cannot compile the model; leave it out of the inputs (forward's default is used) or compute with it as "
            f"a tensor (torch.where)"
        ) from exc


def to_pt2(ctx: ConvertContext, _: str) -> Artifact:
    """``torch.export.export`` with every ``-1`` dim dynamic, saved as ``.pt2``."""
    torch = import_framework("torch", "torch")
    path = ctx.subdir("pt2") / ARTIFACT_FILES["pt2"]
    _check_not_quantized(ctx, torch)
    _check_fx_names(ctx, torch)
    check_no_script_submodules(torch, ctx.source.model)
    args = _args(ctx, torch)
    with torch.inference_mode():  # the program must load without the modules that define its outputs' types
        model = plain_outputs(ctx.source.model, ctx.source.model(*args))
    shapes = _dynamic_shapes(ctx, torch, model)
    # opt_einsum picks an einsum's contraction order from the example's sizes, and torch.export then fixes them
    with _rnn_loops(torch, ctx), torch.backends.opt_einsum.flags(enabled=False):
        try:
            program = torch.export.export(model, args, dynamic_shapes=shapes)
        except Exception as exc:
            if not value_branch(exc):
                raise
            raise ConversionError(f"{describe_failure(exc)}; {BRANCH_ADVICE}") from exc
    _check_still_dynamic(ctx, program)
    torch.export.save(program, str(path))
    return Artifact(path, ctx.source.inputs, {}, frameworks("torch"))


def _check_still_dynamic(ctx: ConvertContext, program: Any) -> None:
    """``Dim.AUTO`` lets torch.export fix a dynamic dim silently where the model's code depends on its size; the
    program would then refuse every other size ("Guard failed: x.size()[0] == 2"): say which dim, and how to export."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    for spec, name in zip(ctx.source.inputs, program.graph_signature.user_inputs, strict=False):
        shape = getattr(values.get(name), "shape", None)
        if shape is None or len(shape) != len(spec.shape):
            continue
        fixed = [(i, int(shape[i])) for i, d in enumerate(spec.shape) if d == -1 and is_concrete_int(shape[i])]
        if fixed:
            dim, size = fixed[0]
            pinned = "x".join(str(size if i == dim else d) for i, d in enumerate(spec.shape))
            raise ConversionError(
                f"torch.export made dim {dim} of input {spec.name!r} static (the example's {size}): the model's code "
                f"depends on its size, so the program would refuse every other size; make that code size-independent "
                f"or export with the dim fixed (--input {spec.name}:{spec.dtype}:{pinned})"
            )


def to_tflite(ctx: ConvertContext, _: str) -> Artifact:
    """litert-torch conversion at static shapes (its dynamic batch bakes reshape targets).

    The shapes are the user's (``--tflite-shape``), else the first ``--batch-sizes`` value and
    the first dynamic size; a shape chosen for the user is a note on the report row.
    """
    torch = import_framework("torch", "torch")
    litert_torch = import_framework("litert_torch", "torch-tflite")
    _check_not_quantized(ctx, torch)
    _check_fx_names(ctx, torch)
    check_no_script_submodules(torch, ctx.source.model)
    batch, dynamic = ctx.options.batch_sizes[0], ctx.options.dynamic_sizes[0]
    static = filled_shapes(ctx.source.inputs, ctx.options.tflite_shapes, batch, dynamic)
    inputs = random_inputs(static, batch, dynamic, np.random.default_rng(ctx.options.seed))
    args = tuple(torch.from_numpy(inputs[s.name]) for s in ctx.source.inputs)
    # keep 64-bit inputs (int64 token ids) as the manifest declares them, instead of downcasting to int32
    wide = any(a.dtype in (torch.int64, torch.float64) for a in args)
    with torch.inference_mode():  # litert-torch flattens plain containers only (a named tuple: "'type' object ...")
        model = plain_outputs(ctx.source.model, ctx.source.model(*args))
    try:  # the model is already in eval mode (a .pt2 module has no eval())
        edge = litert_torch.convert(model, args, enable_x64=wide)
    except Exception as exc:
        half = float16_failure(exc, ctx.source.compute_dtype, "model.float(), float32 inputs")
        if half is not None:
            raise half from exc
        known = complex_failure(exc) or data_dependent_failure(exc) or cond_failure(exc) or transposed_conv_failure(exc)
        if known is not None:
            raise known from exc
        doubles = [n for n, p in ctx.source.model.named_parameters() if p.dtype == torch.float64][:3]
        if not doubles and not any(a.dtype == torch.float64 for a in args):
            raise
        raise ConversionError(
            f"{describe_failure(exc)}; the model computes in float64 (e.g. {', '.join(doubles) or 'its inputs'}), "
            f"which TFLite runs in few ops: a float32 copy (model.float(), float32 inputs) converts"
        ) from exc
    path = ctx.subdir("tflite") / ARTIFACT_FILES["tflite"]
    edge.export(str(path))
    with torch.inference_mode():
        keys = tuple(output_keys(ctx.source.model(*args)))  # litert-torch names a returned dict's outputs by key
    litert = import_framework("ai_edge_litert.interpreter", "tflite")
    try:
        signature = litert.Interpreter(model_path=str(path)).get_signature_list()["serving_default"]
    except ValueError as exc:
        failure = missing_kernel(exc)
        if failure is None:
            raise
        raise failure from exc
    native = {
        **map_native(static, signature["inputs"]),
        **map_native(tuple(_output_names(ctx)), signature["outputs"], keys),
    }
    notes = pinned_notes(ctx.source.inputs, static, ctx.options.tflite_shapes)
    return Artifact(path, static, native, {**frameworks("torch", "litert_torch"), "static_shapes": "true"}, notes)
