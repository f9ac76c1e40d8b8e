"""Per model version inference statistics (Triton's statistics extension), kept as plain counters.

Two cheap recordings feed them: the data plane counts every request that reached a model version
(success or failure, end-to-end time), and the batcher's per-batch callback counts executions,
inferences (rows), queue and compute time. A snapshot turns the counters into immutable values
for the protocol adapters. Counters are per server process (with ``--workers``, the answering
worker's own, like queue depth).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from modelport.serving.batching import BatchStats

__all__ = ["BatchStatistics", "Duration", "Statistics", "VersionStatistics"]


@dataclass(frozen=True)
class Duration:
    """How many times something happened and its cumulative duration in nanoseconds."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchStatistics:
    """Executions of one batch size (rows) and their cumulative compute time."""

    batch_size: int
    compute: Duration


@dataclass(frozen=True)
class VersionStatistics:
    """The statistics of one model version.

    ``success``/``fail`` count requests and their end-to-end time in the server; ``queue`` and
    ``compute`` count successful requests and the time each waited for, and spent in, its batch
    (every request of a batch is charged the batch's compute time, as Triton does);
    ``inference_count`` counts rows, ``execution_count`` successful batches.
    """

    name: str
    version: int
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute: Duration
    batches: tuple[BatchStatistics, ...]


class _Counters:
    """The mutable counters of one model version; updated on the event loop only."""

    __slots__ = (
        "batches",
        "compute_count",
        "compute_ns",
        "executions",
        "fail_count",
        "fail_ns",
        "inferences",
        "last",
        "queue_count",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.success_count = self.success_ns = self.fail_count = self.fail_ns = 0
        self.queue_count = self.queue_ns = self.compute_count = self.compute_ns = 0
        self.inferences = self.executions = 0
        self.last = 0.0  # time.time() of the last request, 0 before the first
        self.batches: dict[int, list[int]] = {}  # rows -> [executions, compute ns]


class Statistics:
    """The counters of every model version this process has served, by (name, version)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], _Counters] = {}

    def _counters(self, name: str, version: int) -> _Counters:
        counters = self._versions.get((name, version))
        if counters is None:
            counters = self._versions[(name, version)] = _Counters()
        return counters

    def request(self, name: str, version: int, seconds: float, succeeded: bool) -> None:
        """One request that reached the model version, with its end-to-end time."""
        counters = self._counters(name, version)
        if succeeded:
            counters.success_count += 1
            counters.success_ns += int(seconds * 1e9)
        else:
            counters.fail_count += 1
            counters.fail_ns += int(seconds * 1e9)
        counters.last = time.time()

    def ensemble(self, name: str, version: int, seconds: float) -> None:
        """One request a pipeline answered, counted as Triton counts an ensemble's: one inference and one
        execution, its time as compute, and a queue count without time (its steps queue in their models'
        batchers). perf_analyzer reads an ensemble's statistics only for the version whose queue count grew."""
        counters = self._counters(name, version)
        counters.inferences += 1
        counters.executions += 1
        counters.queue_count += 1
        counters.compute_count += 1
        counters.compute_ns += int(seconds * 1e9)

    def batch(self, name: str, version: int, stats: BatchStats) -> None:
        """One executed batch (batcher callback); failed batches count only as failed requests."""
        if stats.failed:
            return
        counters = self._counters(name, version)
        compute_ns = int(stats.compute_seconds * 1e9)
        counters.executions += 1
        counters.inferences += stats.rows
        counters.queue_count += len(stats.queue_seconds)
        counters.queue_ns += int(sum(stats.queue_seconds) * 1e9)
        counters.compute_count += stats.requests
        counters.compute_ns += stats.requests * compute_ns
        per_size = counters.batches.get(stats.rows)
        if per_size is None:
            per_size = counters.batches[stats.rows] = [0, 0]
        per_size[0] += 1
        per_size[1] += compute_ns

    def snapshot(self, name: str, version: int) -> VersionStatistics:
        """The statistics of one version now (all zero if it has not been asked anything)."""
        c = self._versions.get((name, version)) or _Counters()
        return VersionStatistics(
            name=name,
            version=version,
            last_inference_ms=int(c.last * 1000),
            inference_count=c.inferences,
            execution_count=c.executions,
            success=Duration(c.success_count, c.success_ns),
            fail=Duration(c.fail_count, c.fail_ns),
            queue=Duration(c.queue_count, c.queue_ns),
            compute=Duration(c.compute_count, c.compute_ns),
            batches=tuple(BatchStatistics(rows, Duration(*c.batches[rows])) for rows in sorted(c.batches)),
        )
