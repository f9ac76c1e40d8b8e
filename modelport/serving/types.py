"""The data plane's typed requests, responses and metadata: what adapters translate to and from.

None of these is a wire shape: each adapter (KServe v2 REST and gRPC, TF Serving REST and gRPC,
TorchServe) maps them to its own format. Tensors are numpy arrays keyed by the manifest's names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.tensors import Arrays

if TYPE_CHECKING:
    from modelport.serving.shm import SharedTensor

__all__ = [
    "ArchiveRegistration",
    "InferRequest",
    "InferResponse",
    "ModelDetails",
    "ModelMetadata",
    "Registered",
    "RepositoryRow",
    "RequestedOutput",
    "ServerMetadata",
    "Signature",
    "TensorMetadata",
    "VersionState",
    "VersionStatus",
]


class VersionState(enum.Enum):
    """Where a served model version is in its life; only READY versions take requests."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, whether it wants it as binary data, as how many top classes, or written
    into a registered shared memory region."""

    name: str
    binary: bool | None = None
    classification: int = 0  # Triton's classification extension: the top N classes as "score:index:label"
    shared_memory: SharedTensor | None = None  # Triton's shared memory extension: where to write it


@dataclass
class InferRequest:
    """A decoded inference request: numpy inputs plus the protocol's metadata."""

    inputs: Arrays
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False
    signature: str = ""  # a SavedModel's other signature, by name (TF Serving's signature_name); "": the model's


@dataclass
class InferResponse:
    """Model outputs to encode back.

    ``results``: for a model with postprocessing, each row's response as a JSON-able value (what
    TorchServe and TF Serving REST answer); ``outputs`` then holds the same as JSON in a BYTES tensor.
    ``json_outputs``: the outputs whose BYTES elements are JSON text (postprocessors'), which the protocols
    that answer JSON answer decoded, whether alone (``results``) or beside other outputs.
    """

    model_name: str
    model_version: str
    outputs: Arrays
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    results: list[Any] | None = None
    json_outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerMetadata:
    """The server's name, version and the protocol extensions it implements (Triton's names)."""

    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output of a model: the manifest's name, dtype (``float32``...) and shape (-1 = dynamic).

    ``native_name`` is the artifact's own name for the tensor (a SavedModel's signature key...).
    ``signature_key`` is its key in a SavedModel's ``serving_default`` signature, empty for other formats.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    native_name: str
    signature_key: str = ""

    @property
    def tfserving_key(self) -> str:
        """The name TF Serving answers the tensor by: the signature's key, else (no signature) the name."""
        return self.signature_key or self.name


@dataclass(frozen=True)
class Signature:
    """One signature of a SavedModel as its SignatureDef says it (TF Serving's metadata lists them all).

    ``method_name``: ``tensorflow/serving/predict``, ``.../classify`` or ``.../regress``; tensors by their keys
    (``name`` = ``signature_key`` = the key, ``native_name`` = the graph tensor's name); ``unranked``: the keys of
    the tensors whose rank the SignatureDef leaves unknown (their ``shape`` is empty).
    """

    name: str
    method_name: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    unranked: frozenset[str] = frozenset()


@dataclass(frozen=True)
class VersionStatus:
    """One served version's state, and why it does not serve (empty when it does)."""

    version: int
    state: VersionState
    reason: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What one model version is and how it is served now.

    ``format`` is None when the version's manifest could not be read; it then has no tensors and
    ``variant``, ``max_batch_size`` and ``parity_passed`` say nothing. ``versions`` lists every
    served version of the model, ascending. ``processed``: the version has processors (config.yaml's
    ``processors:``), and ``inputs``/``outputs`` are then the external ones (payloads, responses).
    """

    name: str
    versions: tuple[int, ...]
    status: VersionStatus
    providers: tuple[str, ...] = ()
    format: str | None = None
    variant: str = ""
    max_batch_size: int = 0
    parity_passed: bool | None = None
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()
    processed: bool = False


@dataclass(frozen=True)
class ModelDetails:
    """How one model version runs: where it was loaded from, its instances and batching (TorchServe's describe).

    ``instances`` is 0 and the batching fields are 0 for a version that did not load; ``gpu`` says
    whether the server's device is a GPU; ``started``: when it went into service; ``pending`` requests wait in
    its queue of ``queue_capacity``; ``timeout_s``: its requests' timeout (0: the server's default); ``platform``:
    its manifest's platform details (a TorchServe archive's file name and runtime: ``mar``, ``mar_runtime``);
    ``max_workers``: TorchServe's ``maxWorkers`` from its ``config.yaml``, if any.
    """

    name: str
    status: VersionStatus
    directory: Path
    format: str | None
    instances: int
    max_batch_size: int
    max_queue_delay_s: float
    gpu: bool
    started: datetime | None = None
    pending: int = 0
    queue_capacity: int = 0
    timeout_s: float = 0.0
    platform: dict[str, str] = field(default_factory=dict)
    max_workers: int = 0  # TorchServe's maxWorkers (config.yaml's max_workers), else 0


@dataclass(frozen=True)
class RepositoryRow:
    """One row of the repository index: a model version, or a model with no version loaded (``version`` None).

    ``state`` is a :class:`VersionState` value, or ``UNAVAILABLE`` for a model without a loaded version.
    """

    name: str
    state: str
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class ArchiveRegistration:
    """Register a model archive (TorchServe's ``POST /models``): where it is, the name to serve it by (default:
    the archive's), and how it runs (None: the archive's or the server's defaults)."""

    url: str
    model_name: str | None = None
    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    initial_workers: int | None = None
    synchronous: bool = True
    inputs: tuple[str, ...] = ()  # modelport's own: import-mar's --input specs, for archives that need them


@dataclass(frozen=True)
class Registered:
    """A registered archive: the model's name, the archive's version label, and the instances now running it
    (None: an asynchronous registration, still going on)."""

    name: str
    label: str
    workers: int | None = None
