"""The serving benchmark's memory figures: PSS of a server's process tree, sampled while it is loaded.

PSS (proportional set size, ``/proc/PID/smaps_rollup``) counts each shared page once across the
processes that map it, so the figures of servers that share libraries add up honestly; RSS
(``VmHWM``) counts every shared page in full in every process. Peak PSS is not recorded by the
kernel, so it is sampled: a thread reads the tree's PSS every ``interval`` seconds during a cell.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from serving_procs import descendants

__all__ = ["PssSampler", "pss_mb"]


def _pss_kib(pid: int) -> int:
    """PSS of one process in KiB (0 when it is gone or unreadable)."""
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pss_mb(pid: int) -> float:
    """PSS of ``pid`` plus all its descendants, in MiB."""
    return sum(_pss_kib(p) for p in (pid, *descendants(pid))) / 1024


class PssSampler:
    """``with PssSampler(pid) as s: ...`` -- ``s.peak_mb``: the highest PSS of the tree seen in the block."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pss-sampler", daemon=True)

    def __enter__(self) -> PssSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _take(self) -> None:
        self.peak_mb = max(self.peak_mb, pss_mb(self.pid))
        self.samples += 1
