"""Factory sources: ``package.module:factory`` or ``file.py:factory``, a callable that returns the model.

The factory imports its own framework and returns a ``torch.nn.Module`` or a Keras/TF model;
``source.load_source`` then wraps the object like any model given through the Python API.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, SourceError, summarize

__all__ = ["call_factory", "is_factory", "python_file_error"]


def is_factory(text: str) -> bool:
    """True for ``package.module:factory`` and ``path/file.py:factory``."""
    module, sep, attr = text.rpartition(":")
    return bool(sep) and attr.isidentifier() and (module.endswith(".py") or _is_dotted(module))


def call_factory(target: str) -> Any:
    """Import the factory named by ``target`` and call it with no arguments."""
    factory = _resolve(target)
    try:
        return factory()
    except Exception as exc:
        raise SourceError(f"factory {target} raised: {summarize(exc)}") from exc


def python_file_error(path: Path) -> InvalidArgumentError:
    """The error for a ``.py`` SOURCE without ``:factory``, naming the functions the file defines."""
    names = _top_level_functions(path)
    defines = f" (it defines: {', '.join(names)})" if names else ""
    return InvalidArgumentError(
        f"SOURCE {str(path)!r} looks like a Python file: name the factory that returns the model, "
        f"{path}:{names[0] if names else 'make_model'}{defines}"
    )


def _is_dotted(module: str) -> bool:
    return bool(module) and all(part.isidentifier() for part in module.split("."))


def _resolve(target: str) -> Any:
    module_name, _, attr = target.rpartition(":")
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else _import_module(module_name)
    except Exception as exc:
        raise SourceError(f"cannot import {module_name!r} for factory {target}: {summarize(exc)}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SourceError(f"{module_name!r} has no callable {attr!r} (from {target})")
    return factory


def _import_file(path: str) -> Any:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_module(name: str) -> Any:
    if "" not in sys.path:  # `python -m` semantics: modules in the working directory are importable
        sys.path.insert(0, "")
    return importlib.import_module(name)


def _top_level_functions(path: Path) -> list[str]:
    """Public top-level functions of a Python file, read without running it."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
