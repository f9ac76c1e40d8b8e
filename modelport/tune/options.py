"""Options of ``modelport tune``: one frozen dataclass the CLI fills, and the parsers of its flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelport.errors import InvalidArgumentError
from modelport.loadtest.options import Protocol
from modelport.loadtest.slo import Slo, checked_slos

__all__ = [
    "OBJECTIVES",
    "SEARCHES",
    "Objective",
    "SearchKind",
    "TuneOptions",
    "parse_cpus",
]

Objective = Literal["max-rps", "min-p99", "min-memory"]
OBJECTIVES: tuple[Objective, ...] = ("max-rps", "min-p99", "min-memory")
SearchKind = Literal["quick", "brute", "optuna"]
SEARCHES: tuple[SearchKind, ...] = ("quick", "brute", "optuna")
TUNE_PROTOCOLS = ("v2", "v2-binary", "tfserving", "torchserve")


def parse_cpus(text: str | None) -> tuple[int, ...]:
    """``0-1``, ``0,2``, ``3`` -> CPU ids (taskset's list syntax); None -> the CPUs this process may use."""
    if not text:
        return tuple(sorted(os.sched_getaffinity(0)))
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise InvalidArgumentError(f"--cpus takes a CPU list like 0-1 or 0,2, got {text!r}") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise InvalidArgumentError(f"--cpus {text!r}: this machine offers CPUs {sorted(allowed)}")
    return tuple(sorted(cpus))


@dataclass(frozen=True)
class TuneOptions:
    """Everything one ``modelport tune REPO/NAME`` needs.

    ``slos`` must all hold at a level for its throughput to count, and so must ``error_rate<=max_error_rate``
    (None: 0, unless an ``slos`` entry is on ``error_rate``): ``parsed_slos`` holds both. ``min_accuracy`` and
    ``max_agreement_drop`` keep variants whose export records (manifest parity) fall short out of
    the space. ``levels`` is the concurrency sweep each candidate climbs, ``level_s`` the seconds at
    each level (``warmup_s`` of them excluded). ``knobs`` narrows the space to the named knobs.
    ``data`` is what the requests carry, as ``loadtest --data`` takes it (``random``, an ``.npz``, or a
    directory of files for a model with processors). ``repository``, ``out`` and a ``data`` path are made
    absolute on construction.
    """

    repository: Path
    family: str
    slos: tuple[str, ...]
    objective: Objective = "max-rps"
    min_accuracy: float | None = None
    max_agreement_drop: float | None = None
    budget_s: float = 900.0
    search: SearchKind = "quick"
    protocol: Protocol = "v2-binary"
    cpus: tuple[int, ...] = ()
    out: Path = Path("tune-out")
    apply: bool = False
    resume: bool = False
    target_rps: float | None = None
    levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    level_s: float = 3.0
    warmup_s: float = 0.5
    knobs: tuple[str, ...] = ()
    data: str = "random"
    confirm_rounds: int = 2
    seed: int = 0
    quiet: bool = False
    max_error_rate: float | None = None
    parsed_slos: tuple[Slo, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.slos:
            raise InvalidArgumentError('give at least one --slo, e.g. --slo "p99<20ms"')
        object.__setattr__(self, "parsed_slos", checked_slos(self.slos, self.max_error_rate))
        if self.protocol not in TUNE_PROTOCOLS:
            raise InvalidArgumentError(f"tune measures over HTTP: --protocol one of {', '.join(TUNE_PROTOCOLS)}")
        if self.min_accuracy is not None and self.max_agreement_drop is not None:
            raise InvalidArgumentError("give --min-accuracy or --max-agreement-drop, not both")
        if self.budget_s <= 0 or self.level_s <= self.warmup_s or not self.levels:
            raise InvalidArgumentError("--budget must be positive and each level longer than its warm-up")
        if self.target_rps is not None and self.target_rps <= 0:
            raise InvalidArgumentError(f"--target-rps must be positive, got {self.target_rps:g}")
        if not self.cpus:
            object.__setattr__(self, "cpus", parse_cpus(None))
        object.__setattr__(self, "repository", Path(self.repository).absolute())
        object.__setattr__(self, "out", Path(self.out).absolute())
        if self.data != "random":
            if not Path(self.data).exists():
                raise InvalidArgumentError(f"--data {self.data}: no such file or directory")
            object.__setattr__(self, "data", str(Path(self.data).absolute()))

    @property
    def cpu_list(self) -> str:
        """The CPUs as taskset takes them."""
        return ",".join(str(c) for c in self.cpus)
