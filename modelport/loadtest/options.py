"""Options of ``modelport loadtest`` and ``modelport compare``: frozen dataclasses the CLI fills.

Their paths are made absolute once, here, where they enter: locust runs with each level's folder as
its working directory, so a path relative to the user's directory would be read from the wrong place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelport.errors import InvalidArgumentError
from modelport.manifest import TensorSpec

__all__ = [
    "GRPC_PROTOCOLS",
    "PROTOCOLS",
    "CompareOptions",
    "Level",
    "LoadTestOptions",
    "Protocol",
    "levels_of",
    "parse_duration",
]

Protocol = Literal["v2", "v2-binary", "v2-grpc", "tfserving", "tfserving-grpc", "torchserve"]
PROTOCOLS: tuple[Protocol, ...] = ("v2", "v2-binary", "v2-grpc", "tfserving", "tfserving-grpc", "torchserve")
GRPC_PROTOCOLS: tuple[Protocol, ...] = ("v2-grpc", "tfserving-grpc")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, flag: str = "--duration") -> float:
    """``30``, ``30s``, ``2m``, ``1h`` -> seconds."""
    found = _DURATION.match(text)
    if not found:
        raise InvalidArgumentError(f"{flag} takes a duration like 30s, 2m or 1h, got {text!r}")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2) or "s"]


@dataclass(frozen=True)
class Level:
    """One step of the load: ``users`` concurrent users, each paced to ``rps / users`` when ``rps`` is set."""

    users: int
    rps: float | None = None

    @property
    def label(self) -> str:
        return f"users={self.users}" + (f" rps={self.rps:g}" if self.rps else "")


def levels_of(users: tuple[int, ...], rps: tuple[float, ...]) -> tuple[Level, ...]:
    """Pair a sweep of users with a sweep of target rates (a single value applies to every level)."""
    if not users or any(u < 1 for u in users):
        raise InvalidArgumentError(f"--users takes positive integers, got {list(users)}")
    if any(r <= 0 for r in rps):
        raise InvalidArgumentError(f"--rps takes positive rates, got {list(rps)}")
    if not rps:
        return tuple(Level(u) for u in users)
    if len(users) > 1 and len(rps) > 1 and len(users) != len(rps):
        raise InvalidArgumentError(
            f"--users and --rps sweep together: give as many of each, or one of either ({len(users)} vs {len(rps)})"
        )
    count = max(len(users), len(rps))
    return tuple(
        Level(users[i % len(users)] if len(users) > 1 else users[0], rps[i] if len(rps) > 1 else rps[0])
        for i in range(count)
    )


@dataclass(frozen=True)
class LoadTestOptions:
    """Everything one ``modelport loadtest`` run needs.

    ``url`` is ``http://host:port`` for the HTTP protocols and ``host:port`` (or ``grpc://host:port``)
    for the gRPC ones. ``inputs`` override or complete the served model's metadata. ``data`` is
    ``random``, an ``.npz`` (inputs keyed by name, or a ``golden.npz``) or a directory of files, each a payload
    of a model with processors (sent in each protocol's shape for bytes). ``api_key`` is sent as
    ``Authorization: Bearer`` (HTTP header or gRPC metadata) with every request. ``max_error_rate``
    fails a level whose share of failed requests is above it (None: 0, unless an ``slos`` entry is on
    ``error_rate``). ``out`` and
    ``locustfile`` are made absolute (relative to the current directory) on construction.
    """

    url: str
    model: str
    protocol: Protocol = "v2"
    version: str | None = None
    levels: tuple[Level, ...] = (Level(1),)
    duration_s: float = 10.0
    spawn_rate: float | None = None
    inputs: tuple[TensorSpec, ...] = ()
    batch_size: int = 1
    data: str = "random"
    samples: int = 16
    seed: int = 0
    slos: tuple[str, ...] = ()
    metrics_url: str | None = None
    out: Path = Path("loadtest-out")
    locustfile: Path | None = None
    ui: bool = False
    ui_port: int = 8089
    timeout_s: float = 30.0
    quiet: bool = False
    title: str = ""
    api_key: str = field(default="", repr=False)
    max_error_rate: float | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InvalidArgumentError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.duration_s < 1:
            raise InvalidArgumentError(f"--duration must be at least 1s, got {self.duration_s:g}s")
        if self.batch_size < 1 or self.samples < 1:
            raise InvalidArgumentError("--batch-size and --samples must be positive")
        if self.ui and len(self.levels) > 1:
            raise InvalidArgumentError("--ui runs one interactive level: give a single --users value")
        if self.spawn_rate is not None and self.spawn_rate <= 0:
            raise InvalidArgumentError(f"--spawn-rate must be positive, got {self.spawn_rate:g}")
        _absolute(self, "out", "locustfile")


@dataclass(frozen=True)
class CompareOptions:
    """``modelport compare REPO/NAME``: the same load against every served variant of one model.

    ``max_error_rate``: a variant whose requests failed above this share at any level fails the run.
    ``families`` (``modelport compare REPO --families A,B``) puts the variants of several families
    side by side (a framework shoot-out); ``family`` is then their names joined by commas.
    ``repository`` and ``out`` are made absolute (relative to the current directory) on construction.
    """

    repository: Path
    family: str = ""
    variants: tuple[str, ...] = ()
    protocol: Protocol = "v2"
    levels: tuple[Level, ...] = (Level(1), Level(8), Level(32))
    duration_s: float = 10.0
    batch_size: int = 1
    data: str = "random"
    slos: tuple[str, ...] = ("p99<50ms", "error_rate<1%")
    out: Path = Path("compare-out")
    serve_args: tuple[str, ...] = field(default=())
    quiet: bool = False
    families: tuple[str, ...] = ()
    max_error_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.families:
            object.__setattr__(self, "family", ",".join(self.families))
        elif self.family:
            object.__setattr__(self, "families", (self.family,))
        else:
            raise InvalidArgumentError("compare needs a family: REPO/NAME, or REPO --families A,B")
        if not 0 <= self.max_error_rate <= 1:
            raise InvalidArgumentError(f"--max-error-rate takes a fraction in [0, 1], got {self.max_error_rate:g}")
        _absolute(self, "repository", "out")


def _absolute(options: object, *names: str) -> None:
    """Make the path fields ``names`` of a frozen ``options`` absolute, relative to the current directory."""
    for name in names:
        path = getattr(options, name)
        if path is not None:
            object.__setattr__(options, name, Path(path).absolute())
