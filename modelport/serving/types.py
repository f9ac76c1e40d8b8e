"""The data plane's typed requests and responses: what adapters translate to and from.

None of these is a wire shape: each adapter maps them to its own format. Tensors are numpy arrays
keyed by the manifest's names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from modelport.tensors import Arrays

__all__ = [
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "VersionState",
]


class VersionState(enum.Enum):
    """Where a served model version is in its life; only READY versions take requests."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    """A decoded inference request: numpy inputs plus the protocol's metadata."""

    inputs: Arrays
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False


@dataclass
class InferResponse:
    """Model outputs to encode back."""

    model_name: str
    model_version: str
    outputs: Arrays
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
