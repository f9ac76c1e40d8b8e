"""PyTorch models torch.export cannot trace because of TorchScript or Python control flow, said in the user's terms."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from modelport.errors import ConversionError
from modelport.exporters.artifact import describe_failure

__all__ = [
    "BRANCH_ADVICE",
    "check_no_script_submodules",
    "math_attention",
    "script_after_trace",
    "script_submodules",
    "value_branch",
]

# torch.export's words for a Python `if` (or .item(), bool()) on a tensor's value, which it cannot trace
_VALUE_BRANCH = re.compile(r"GuardOnDataDependentSymNode|Could not guard on data-dependent expression")
BRANCH_ADVICE = (
    "the model branches on a tensor's value in Python (`if x.sum() > 0:`, `.item()`, `bool(t)`), which torch.export "
    "cannot follow: write the branch with torch.cond (both sides are exported) or torch.where"
)


def value_branch(exc: BaseException) -> bool:
    """Whether torch.export failed on a Python branch on a tensor's value."""
    return _VALUE_BRANCH.search(describe_failure(exc)) is not None


def script_submodules(torch: Any, model: Any) -> list[str]:
    """The names of a Python module's ``torch.jit.script``-ed submodules (none for a ScriptModule itself)."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return []
    return [name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]


def check_no_script_submodules(torch: Any, model: Any) -> None:
    """torch.export cannot trace into a scripted submodule; it fails calling it ("Inner.forward() takes 2
    positional arguments but 3 were given")."""
    scripted = script_submodules(torch, model)
    if scripted:
        raise ConversionError(
            f"the model holds a torch.jit.script-ed submodule ({scripted[0]!r}), which torch.export (behind pt2, "
            f"tflite and the default onnx exporter) cannot trace: keep it a Python module (drop torch.jit.script) "
            f"for these formats; torchscript and onnx (--legacy-onnx) take it as it is"
        )


@contextlib.contextmanager
def math_attention(torch: Any) -> Iterator[None]:
    """PyTorch's eval-mode fast path of ``nn.TransformerEncoder`` / ``nn.MultiheadAttention`` off, as torch.export
    (behind onnx, pt2 and tflite) never takes it. With a ``src_key_padding_mask`` padded at the end, the fast path
    computes on nested tensors and answers 0 at the padded positions, where every exported format answers the math
    path's values: the gates failed them on padded golden or eval inputs, blaming a converter. The golden outputs and
    the TorchScript trace take the math path; the unpadded positions are the same either way."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def script_after_trace(torch: Any, model: Any, traced: BaseException) -> Any:
    """``torch.jit.script`` of a model ``torch.jit.trace`` failed on (``traced``). A model calling ``torch.cond`` (or
    another torch.compile-based op) fails both ("a dynamo-optimized function", "Lambda aren't supported"): say so."""
    try:
        return torch.jit.script(model)
    except Exception as exc:
        if "dynamo-optimized function" not in str(traced):
            raise
        raise ConversionError(
            f"{describe_failure(exc)}; the model calls torch.cond (or another op that runs through torch.compile), "
            f"which TorchScript can neither trace nor script: the torchscript format cannot hold it (pt2 and onnx "
            f"export torch.cond with both branches)"
        ) from exc
