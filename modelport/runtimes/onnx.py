"""ONNX Runtime for ``.onnx`` and ``.ort`` artifacts; reports the providers in use.

Memory (``onnx_arena``): onnxruntime's CPU arena keeps what runs allocated and never gives it back. Measured
on ResNet-18 (one thread) under batches of 1 to 32 rows in random order, above the loaded model:

* ``session``, onnxruntime's default and the server's: an arena per session, grown region by region (each
  twice the last), the tensors of later runs scattered over regions it cannot merge: +180 to +260 MB,
  depending on the order of the batch sizes;
* ``shared``: one arena for the process whose first region (256 MiB of address space: only the pages runs
  touch become resident) holds a whole batch's tensors, packed: +110 to +140 MB, about the live tensors of
  a batch of 32, at the same CPU per item. The region's index costs 8 MB up front (1/32 of its size), which
  is why it is not the default: a small model's server would idle 8 MB higher. A model whose batches need more
  grows it region by region like ``session``;
* ``none``: every run allocates afresh from malloc: +280 MB at a run's peak as glibc keeps and scatters
  freed blocks; with ``MALLOC_MMAP_THRESHOLD_=1048576`` +130 to +160 MB and nothing kept between runs, but
  8% more compute per item (every run faults its tensors' pages in again).

An arena extended by exactly each request (onnxruntime's kSameAsRequested) fragmented worst: +400 to +540 MB.
The shared arena outlives the models: what one model's runs touched serves the next model's, but an unload
gives none of it back.

Runs of a few rows (CPU only): a batch whose rows take long to compute runs in slices of as many rows as
take about ``RUN_SECONDS``, the outputs joined. On one core (``benchmarks/resnet_memory.py``, ResNet-18, one
thread) the compute per item is flat from 4 rows up (42-43 items per CPU-second at 4, 8, 16 and 32 rows; 40
at one row), while a run's tensors grow with its rows: +11 MB above the loaded session at 4 rows, +57 MB at 8,
+107 MB at 16, +208 MB at 32, and the arena keeps the largest. So more rows per run buy nothing once a run is
long enough to amortize onnxruntime's per-call cost (tens of microseconds). A batch's first slice is one row
until a run has been timed; a small model (microseconds a row) never slices. GPUs keep whole batches.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelport.cpus import default_threads
from modelport.errors import UnsupportedError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework, rejected_input

__all__ = ["OnnxRuntime", "choose_providers", "from_ort_strings", "session_options", "status_message", "to_ort_strings"]

log = logging.getLogger(__name__)

# The shared arena's first region. One region that holds a batch's tensors keeps them packed at its start
# (best fit); 1 GiB held them as well but its index (1/32 of the region, resident) cost 32 MB up front.
_SHARED_REGION_BYTES = 256 << 20
_shared_arena_lock = threading.Lock()
_shared_arena_registered = False

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

# How long a CPU run should take at least: rows beyond that add memory, not speed (see the notes above).
RUN_SECONDS = 0.1


def choose_providers(requested: tuple[str, ...], device: str, available: list[str]) -> list[str]:
    """Providers to ask for: the requested ones (must exist), else GPU ones on ``cuda``, then CPU."""
    missing = [p for p in requested if p not in available]
    if missing:
        raise UnsupportedError(
            f"execution providers {missing} are not available in this onnxruntime (has: {available})"
        )
    if requested:
        chosen = list(requested)
    elif device.startswith("cuda"):
        chosen = [p for p in _GPU_PROVIDERS if p in available]
    else:
        chosen = []
    return [*chosen, "CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else chosen


def to_ort_strings(name: str, value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A string tensor (bytes) as onnxruntime takes one: str objects, the bytes read as UTF-8 (onnxruntime
    writes a bytes object as its repr, ``"b'abc'"``, and reads fixed-width bytes past their end)."""
    try:
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel()], dtype=object).reshape(
            value.shape
        )
    except UnicodeDecodeError as exc:
        raise rejected_input(f"input {name!r}: an ONNX string tensor holds UTF-8 text ({exc.reason})") from None


def from_ort_strings(value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """onnxruntime's string output (str objects) as bytes, like every runtime's string outputs."""
    return np.array([v.encode() if isinstance(v, str) else v for v in value.ravel()], dtype=object).reshape(value.shape)


class OnnxRuntime:
    """Runs an ONNX or ORT-format model with onnxruntime."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = directory / manifest.artifact
        self.manifest = manifest
        self.options = options
        self.session: Any = None
        self.providers: list[str] = []
        self._invalid_argument: tuple[type[Exception], ...] = ()  # set by load()
        # the feed's and the outputs' names, looked up once: predict runs for every batch
        self._feed = [(spec.name, manifest.native(spec.name)) for spec in manifest.inputs]
        self._fetch = [manifest.native(spec.name) for spec in manifest.outputs]
        self._outputs = [spec.name for spec in manifest.outputs]
        self._string_inputs = [(s.name, manifest.native(s.name)) for s in manifest.inputs if s.dtype == "string"]
        self._string_outputs = [i for i, spec in enumerate(manifest.outputs) if spec.dtype == "string"]
        # rows per run (0 = the whole batch): CPU sessions of batched models slice, see RUN_SECONDS
        self._run_rows = 0

    def load(self) -> None:
        ort = import_framework("onnxruntime", "cpu")
        wanted = choose_providers(self.options.providers, self.options.device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(self.path), session_options(ort, self.options), providers=wanted)
        self.providers = list(self.session.get_providers())
        if self.manifest.max_batch_size and self.providers == ["CPUExecutionProvider"]:
            self._run_rows = 1  # until a run is timed
        state = import_framework("onnxruntime.capi.onnxruntime_pybind11_state", "cpu")
        self._invalid_argument = (state.InvalidArgument,)  # a Gather index out of bounds, among others
        log.info("%s: onnxruntime providers in use: %s", self.manifest.name, self.providers)

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {}
        for name, native in self._feed:  # a loop, not a comprehension: no function object per batch
            feed[native] = inputs[name]
        for name, native in self._string_inputs:
            feed[native] = to_ort_strings(name, feed[native])
        rows = len(feed[self._feed[0][1]]) if self._run_rows and feed else 0
        if rows <= self._run_rows:
            values = self._run(feed)
        else:
            values = self._sliced(feed, rows)
        for index in self._string_outputs:
            values[index] = from_ort_strings(values[index])
        return dict(zip(self._outputs, values, strict=True))

    def _sliced(self, feed: dict[str, Any], rows: int) -> list[Any]:
        """``feed`` in runs of ``_run_rows`` rows (re-estimated after each), the outputs joined."""
        parts: list[list[Any]] = []
        start = 0
        while start < rows:
            stop = min(rows, start + self._run_rows)
            began = time.thread_time()  # this thread's compute: the CPU the run took, not what others' load adds
            parts.append(self._run({name: value[start:stop] for name, value in feed.items()}))
            per_row = (time.thread_time() - began) / (stop - start)
            self._run_rows = max(1, math.ceil(RUN_SECONDS / per_row)) if per_row > 0 else rows
            start = stop
        return [np.concatenate(column) for column in zip(*parts, strict=True)]

    def _run(self, feed: dict[str, Any]) -> list[Any]:
        try:
            return list(self.session.run(self._fetch, feed))
        except self._invalid_argument as exc:
            raise rejected_input(status_message(str(exc))) from exc

    def unload(self) -> None:
        self.session = None


def session_options(ort: Any, options: RuntimeOptions) -> Any:
    """onnxruntime ``SessionOptions`` for ``options``: quiet logs, threads, the CPU memory arena."""
    result = ort.SessionOptions()
    result.log_severity_level = 3
    threads = options.intra_op_threads or default_threads()  # onnxruntime's own default ignores the affinity
    if threads:
        result.intra_op_num_threads = threads
    if options.onnx_arena == "none":
        result.enable_cpu_mem_arena = False
    elif options.onnx_arena == "shared":
        _register_shared_arena(ort)
        result.add_session_config_entry("session.use_env_allocators", "1")
    return result


def _register_shared_arena(ort: Any) -> None:
    """The process's CPU arena for sessions that ask for it (once: onnxruntime's environment is global)."""
    global _shared_arena_registered
    with _shared_arena_lock:
        if _shared_arena_registered:
            return
        cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg({"initial_chunk_size_bytes": _SHARED_REGION_BYTES}))
        _shared_arena_registered = True


def status_message(text: str) -> str:
    """What an onnxruntime error says about the values, without its prefix and node name.

    ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Gather
    node. Name:'/embed/Gather' Status Message: indices element out of data bounds, idx=5000 ...``
    """
    _, found, status = text.rpartition("Status Message:")
    return status if found else text.rpartition("INVALID_ARGUMENT :")[2]
