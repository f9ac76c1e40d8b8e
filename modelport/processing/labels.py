"""Class labels: TorchServe's ``index_to_name.json`` or a ``labels.txt`` with one label per line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.processing.base import ProcessingContext

__all__ = ["DEFAULT_LABEL_FILES", "Labels", "find_labels", "read_labels"]

DEFAULT_LABEL_FILES = ("index_to_name.json", "labels.txt")


@dataclass(frozen=True)
class Labels:
    """Class index -> name; an index without a name is written as its number, as TorchServe does."""

    names: dict[int, str] = field(default_factory=dict)
    file: str = ""  # the labels file, relative to the version directory ("" when none was found)

    def __call__(self, index: int) -> str:
        """The name of class ``index``."""
        return self.names.get(index, str(index))


def read_labels(path: Path) -> Labels:
    """Read ``index_to_name.json`` (``{"0": "cat"}``, ``{"0": ["n0", "cat"]}`` takes the last) or one per line
    (line ``i`` names class ``i``; a blank line leaves its class unnamed, so it is written as its number)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"no labels file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: cannot read labels: {exc}") from None
    if path.suffix != ".json":
        return Labels({i: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()})
    try:
        return Labels(_from_mapping(json.loads(text)))
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{path}: not an index -> name mapping: {exc}") from None


def _from_mapping(data: Any) -> dict[int, str]:
    if not isinstance(data, dict):
        raise TypeError('expected {"0": "name", ...}')
    if isinstance(data.get("object_type_names"), list):  # an older TorchServe example format
        return {i: str(name) for i, name in enumerate(data["object_type_names"])}
    names = {}
    for key, value in data.items():
        name = value[-1] if isinstance(value, list) and value else value
        if not isinstance(name, str):
            raise TypeError(f"label of {key!r} is not a string")
        names[int(key)] = name
    return names


def find_labels(explicit: str | None, context: ProcessingContext, output: str | None) -> Labels:
    """``explicit`` (must exist), else the manifest output's labels file, else a default file, else none."""
    if explicit is not None:
        return read_labels(context.directory / explicit)
    spec = context.output_spec(output)
    candidates = ((spec.labels,) if spec is not None and spec.labels else ()) + DEFAULT_LABEL_FILES
    for name in candidates:
        if (context.directory / name).is_file():
            return replace(read_labels(context.directory / name), file=name)
    return Labels()
