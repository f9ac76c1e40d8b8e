"""The search space of ``modelport tune``: admissible variants and the serving knobs, bounded by the CPUs.

A candidate is one point of the space: a variant of the family and a value for every knob. The
knobs are the ``config.yaml`` keys the server reads per model (``instances``, ``max_batch_size``,
``max_queue_delay_ms``, ``preferred_batch_sizes``, ``intra_op_threads``) and the server's
``--workers``. The first value of every knob is what the server does when it is not set, so the
first point of the space is the default configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.loadtest.compare_result import Variant
from modelport.manifest import ModelManifest

__all__ = [
    "CONFIG_KNOBS",
    "KNOBS",
    "Candidate",
    "Space",
    "accuracy_of",
    "admissible",
    "build_space",
]

CONFIG_KNOBS = ("instances", "intra_op_threads", "max_batch_size", "max_queue_delay_ms", "preferred_batch_sizes")
KNOBS = ("variant", "workers", *CONFIG_KNOBS)
Value = Any  # a knob's value: str, int, float or a tuple of ints


@dataclass(frozen=True)
class Candidate:
    """One point of the space: the variant's model name and the value of every knob (``knobs`` order)."""

    values: tuple[tuple[str, Value], ...]

    @property
    def assignment(self) -> dict[str, Value]:
        return dict(self.values)

    @property
    def variant(self) -> str:
        return str(self.assignment["variant"])

    @property
    def workers(self) -> int:
        return int(self.assignment["workers"])

    @property
    def config(self) -> dict[str, Any]:
        """The ``config.yaml`` keys of this candidate (preferred batch sizes above the batch limit dropped)."""
        given = self.assignment
        config: dict[str, Any] = {k: given[k] for k in CONFIG_KNOBS if k in given}
        limit = config.get("max_batch_size") or 0
        config["preferred_batch_sizes"] = [s for s in config.get("preferred_batch_sizes", ()) if s <= limit]
        return config

    @property
    def key(self) -> str:
        """A stable identity, for ``--resume`` and de-duplication."""
        return " ".join(f"{k}={_show(v)}" for k, v in self.values)

    def settings(self) -> str:
        """The knobs compactly, for the table."""
        return " ".join(f"{_SHORT[k]}={_show(v)}" for k, v in self.values if k != "variant")


_SHORT = {
    "workers": "w",
    "instances": "inst",
    "intra_op_threads": "thr",
    "max_batch_size": "mbs",
    "max_queue_delay_ms": "delay",
    "preferred_batch_sizes": "pref",
}


def _show(value: Value) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Space:
    """Every knob's values (the first is the default) and the variants behind the ``variant`` knob."""

    knobs: tuple[tuple[str, tuple[Value, ...]], ...]
    variants: dict[str, Variant]
    excluded: tuple[str, ...]  # variants the accuracy floor kept out, each with why

    @property
    def size(self) -> int:
        total = 1
        for _, values in self.knobs:
            total *= len(values)
        return total

    def default(self) -> Candidate:
        return Candidate(tuple((name, values[0]) for name, values in self.knobs))

    def with_value(self, candidate: Candidate, knob: str, value: Value) -> Candidate:
        return Candidate(tuple((k, value if k == knob else v) for k, v in candidate.values))

    def effective(self, candidate: Candidate) -> Candidate:
        """The candidate as the server runs it: it caps config.yaml's ``max_batch_size`` at the variant's
        manifest, and a variant that takes no batch (a static-shape TFLite model: 0) has no queue delay
        or preferred sizes either. Candidates that differ only above that cap are one measurement."""
        variant, given = self.variants.get(candidate.variant), candidate.assignment
        if variant is None or given.get("max_batch_size", 0) <= variant.manifest.max_batch_size:
            return candidate
        limit = variant.manifest.max_batch_size
        capped: dict[str, Value] = {"max_batch_size": limit}
        if limit == 0:
            capped.update(max_queue_delay_ms=0.0, preferred_batch_sizes=())
        return Candidate(tuple((k, capped.get(k, v)) for k, v in candidate.values))


def accuracy_of(manifest: ModelManifest) -> tuple[float | None, float | None]:
    """(accuracy on the eval data, top-1 agreement with the source) from the export's parity record.

    A variant that passed a tolerance gate agrees with its source on every golden input: agreement 1.
    """
    parity = manifest.parity
    if parity is None:
        return None, None
    agreements = [o.top1_agreement for o in parity.outputs if o.top1_agreement is not None]
    if agreements:
        return parity.accuracy, min(agreements)
    return parity.accuracy, 1.0 if parity.passed and parity.gate == "tolerance" else None


def admissible(
    variants: list[Variant], min_accuracy: float | None, max_agreement_drop: float | None
) -> tuple[list[Variant], list[str]]:
    """The variants the accuracy floor allows (and that passed their parity gate), and why each other one is out."""
    kept, excluded = [], []
    for variant in variants:
        accuracy, agreement = accuracy_of(variant.manifest)
        parity = variant.manifest.parity
        why = "failed its parity gate at export (the server refuses it)" if parity and not parity.passed else ""
        if min_accuracy is not None:
            if accuracy is None:
                why = "no accuracy recorded at export (export with --eval-data)"
            elif accuracy < min_accuracy:
                why = f"accuracy {100 * accuracy:.2f}% < {100 * min_accuracy:.2f}%"
        if max_agreement_drop is not None:
            if agreement is None:
                why = "no top-1 agreement recorded at export"
            elif 1 - agreement > max_agreement_drop + 1e-12:
                why = f"top-1 agreement {100 * agreement:.2f}% drops more than {100 * max_agreement_drop:.2f}%"
        if why:
            excluded.append(f"{variant.name}: {why}")
        else:
            kept.append(variant)
    return kept, excluded


def _default_first(variants: list[Variant]) -> list[Variant]:
    """The family's plain ONNX variant first (what a user serves without tuning), else the first."""
    return sorted(variants, key=lambda v: (v.manifest.variant != "onnx", v.manifest.quantization is not None))


def _powers(limit: int) -> tuple[int, ...]:
    return tuple(n for n in (1, 2, 4, 8, 16) if n <= limit) or (1,)


def build_space(variants: list[Variant], excluded: list[str], cpus: int, only: tuple[str, ...] = ()) -> Space:
    """The knobs' values for this family on ``cpus`` CPUs; knobs not in ``only`` (when given) stay at default."""
    if not variants:
        raise NotFoundError("the accuracy floor leaves no variant to tune:\n  " + "\n  ".join(excluded))
    unknown = [k for k in only if k not in KNOBS]
    if unknown:
        raise InvalidArgumentError(f"--knobs {unknown}: known knobs are {', '.join(KNOBS)}")
    ordered = _default_first(variants)
    batch = max(v.manifest.max_batch_size for v in ordered)
    batches = (batch, *(n for n in (1, 8, 32) if n < batch)) if batch else (0,)
    knobs: dict[str, tuple[Value, ...]] = {
        "variant": tuple(v.name for v in ordered),
        "workers": _powers(cpus),
        "instances": _powers(cpus),
        "intra_op_threads": (0, *_powers(cpus)) if cpus > 1 else (0, 1),
        "max_batch_size": batches,
        "max_queue_delay_ms": (0.0, 1.0, 4.0) if batch else (0.0,),
        "preferred_batch_sizes": ((), (4, 8)) if batch >= 8 else ((),),
    }
    if only:
        knobs = {k: v if k in only else v[:1] for k, v in knobs.items()}
    return Space(tuple(knobs.items()), {v.name: v for v in ordered}, tuple(excluded))
