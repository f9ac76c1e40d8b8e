"""What the remote runtimes share: the target, health probing in the background, batch row fan-out.

A remote runtime forwards predictions to a server that already runs the model (TorchServe,
TF Serving). Its health is the remote's: a probe thread asks the remote every
``health_interval_s`` and every call updates it, so readiness follows the remote and a model
recovers by itself when the remote comes back.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ModelportError, SourceError, UnavailableError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RemoteTarget, RuntimeOptions
from modelport.tensors import lookup_dtype

__all__ = ["RemoteRuntime", "fan_out", "split_rows", "stack_rows"]

log = logging.getLogger(__name__)


class RemoteRuntime(ABC):
    """Base of the runtimes that call another server; subclasses implement ``_probe`` and ``_call``."""

    kind = "remote"

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        if options.remote is None:
            raise SourceError(f"{manifest.name}: runtime {self.kind} needs a remote: section in config.yaml")
        self.directory = directory
        self.manifest = manifest
        self.target: RemoteTarget = options.remote
        self.providers = [f"{self.kind}:{self.target.address}"]
        self._healthy, self._reason = False, f"{self.kind} at {self.target.address} not probed yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Connect and probe once; the probe thread keeps the health current afterwards."""
        self._connect()
        self._set_health(*self._safe_probe())
        self._thread = threading.Thread(target=self._probe_forever, name=f"{self.kind}-health", daemon=True)
        self._thread.start()

    def unload(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.target.timeout_s + 1)
        self._disconnect()

    def health(self) -> tuple[bool, str]:
        """The remote's health as last seen by the probe or a call."""
        return self._healthy, self._reason

    def predict(self, inputs: Arrays) -> Arrays:
        try:
            outputs = self._call(inputs)
        except UnavailableError as exc:
            self._set_health(False, exc.message)
            raise
        self._set_health(True, "")
        return outputs

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _probe(self) -> tuple[bool, str]:
        """Ask the remote whether it serves the model: (healthy, why not)."""

    @abstractmethod
    def _call(self, inputs: Arrays) -> Arrays:
        """One prediction on the remote; raise UnavailableError when it cannot be reached."""

    def _safe_probe(self) -> tuple[bool, str]:
        try:
            return self._probe()
        except ModelportError as exc:
            return False, exc.message
        except Exception as exc:  # the probe must never kill its thread
            return False, f"{self.kind} health probe failed: {exc}"

    def _probe_forever(self) -> None:
        while not self._stop.wait(self.target.health_interval_s):
            self._set_health(*self._safe_probe())

    def _set_health(self, healthy: bool, reason: str) -> None:
        if healthy != self._healthy:
            log.warning("%s %s: %s", self.kind, self.target.address, "healthy again" if healthy else reason)
        self._healthy, self._reason = healthy, reason


def split_rows(manifest: ModelManifest, inputs: Arrays) -> list[Arrays]:
    """The instances of a batch (one per row), or the single instance of an unbatched model."""
    if not manifest.max_batch_size:
        return [inputs]
    size = next(iter(inputs.values())).shape[0] if inputs else 0
    return [{name: value[i] for name, value in inputs.items()} for i in range(size)]


def stack_rows(manifest: ModelManifest, rows: list[Arrays]) -> Arrays:
    """Join per-instance outputs back into the batch, in the manifest's dtypes."""
    out: Arrays = {}
    for spec in manifest.outputs:
        values = [np.asarray(row[spec.name]) for row in rows]
        joined = np.stack(values) if manifest.max_batch_size else values[0]
        out[spec.name] = joined.astype(lookup_dtype(spec.dtype).np_dtype(), copy=False)
    return out


def fan_out(pool: ThreadPoolExecutor, call: Any, rows: list[Arrays]) -> list[Arrays]:
    """Run ``call`` on every row concurrently (the remote batches them), in order."""
    if len(rows) == 1:
        return [call(rows[0])]
    return list(pool.map(call, rows))
