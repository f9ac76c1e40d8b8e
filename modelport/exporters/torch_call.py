"""How the exporters call a PyTorch module: its inputs by keyword where named so, its outputs as plain containers.

The source and every converter call a module positionally, in the order of the input specs. A module whose
inputs are not its first parameters in order (Hugging Face's ``BertModel.forward(input_ids, attention_mask,
token_type_ids, ...)`` given ``input_ids`` and ``token_type_ids``; ``GPT2LMHeadModel.forward(input_ids, cache,
attention_mask, ...)`` given ``input_ids`` and ``attention_mask``) would get an input in another parameter's
place: a wrong answer under the input's name, or a failure inside the model. Such a module is wrapped in one
that takes the inputs positionally and calls it by keyword.

A ``.pt2`` program records the types of its outputs' containers, and loading it needs each type that is not
Python's own registered with PyTorch's pytree: a Hugging Face ``SequenceClassifierOutput`` is registered only
once ``transformers`` is imported, which a server never does ("Deserializing
transformers.modeling_outputs.SequenceClassifierOutput in pytree is not registered"). torch.export is given a
wrapper that returns the outputs as plain dicts, lists and tuples.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from modelport.errors import SpecError
from modelport.manifest import TensorSpec
from modelport.runtimes.base import import_framework

__all__ = ["forward_parameters", "keyword_call", "plain_outputs", "takes_args"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keyword_call(model: Any, inputs: tuple[TensorSpec, ...], location: str) -> Any:
    """``model`` itself when its inputs are its leading positional parameters (or name none of them), else
    a wrapper that passes them by keyword; inputs that name some parameters but not all are refused."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return model
    names = [s.name for s in inputs]
    positional = [n for n, p in parameters.items() if p.kind in _POSITIONAL]
    if names == positional[: len(names)]:
        return model
    keywords = [n for n, p in parameters.items() if p.kind in _KEYWORD]
    if all(n in keywords for n in names):
        return _wrapper_class()(model, tuple(names)).eval()
    misplaced = [(n, positional[i]) for i, n in enumerate(names[: len(positional)]) if n in keywords]
    misplaced = [(n, taken) for n, taken in misplaced if n != taken]
    if misplaced:
        name, taken = misplaced[0]
        raise SpecError(
            f"{location}: input {name!r} would be passed as forward's parameter {taken!r} (forward takes "
            f"{', '.join(positional[: len(names) + 1])}, ...): name every input after a parameter of forward "
            f"({', '.join(keywords[:6])}, ...) and each is passed by keyword"
        )
    return model


def forward_parameters(model: Any) -> list[str]:
    """The names ``model.forward`` takes one tensor by (none of ``*args`` and ``**kwargs``), in order."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return []
    return [n for n, p in parameters.items() if p.kind in (*_POSITIONAL, *_KEYWORD)]


def plain_outputs(model: Any, result: Any) -> Any:
    """``model`` wrapped so that its outputs come back in plain dicts, lists and tuples, where ``result`` (what it
    returned) holds other containers; else ``model`` itself, whose program keeps its forward's parameter names."""
    if takes_args(model) or _is_plain(result):
        return model
    return _wrapper_class()(model, ()).eval()


def takes_args(model: Any) -> bool:
    """Whether ``model`` is the wrapper: its ``forward`` takes ``*args``, so torch.export's dynamic shapes nest."""
    return isinstance(model, _wrapper_class())


def _is_plain(value: Any) -> bool:
    if type(value) in (dict, list, tuple):
        return all(_is_plain(item) for item in (value.values() if isinstance(value, dict) else value))
    return not isinstance(value, dict | list | tuple)


def _plain(value: Any) -> Any:
    """Subclasses of dict, list and tuple (a ``ModelOutput``, a named tuple) as the plain containers."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


@functools.cache
def _wrapper_class() -> Any:
    torch = import_framework("torch", "torch")

    class SourceCall(torch.nn.Module):  # type: ignore[misc,name-defined]
        """Calls ``model`` with its inputs, given positionally, as the keyword arguments ``names`` (positionally
        when there are none), and returns its outputs in plain containers."""

        def __init__(self, model: Any, names: tuple[str, ...]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *args: Any) -> Any:
            if self.names:
                return _plain(self.model(**dict(zip(self.names, args, strict=True))))
            return _plain(self.model(*args))

    return SourceCall
