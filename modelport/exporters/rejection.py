"""Rejected variants: why a variant failed its parity gate, where it was kept, and how to publish it.

A variant that fails its gate is moved to ``REPO/.rejected/<model>/<version>/`` (never served).
The export report, ``modelport inspect`` and ``modelport bundle`` all explain it the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

from modelport.errors import ModelportError
from modelport.manifest import MANIFEST_FILE, ModelManifest, OutputParity, ParityRecord, read_manifest

__all__ = ["REJECTED_DIR", "failing_outputs", "publish_hint", "rejected_versions"]

REJECTED_DIR = ".rejected"
# |a - e| / (|e| + atol) from which an error is a wrong value, not float rounding (the hint says so)
_WRONG = 10.0


def failing_outputs(parity: ParityRecord) -> str:
    """Each output that failed the gate, with its error: ``output 'probs' top-1 agreement 91.0% < 99.0%``."""
    return "; ".join(f"output {o.name!r} {o.detail or _miss(o, parity)}" for o in parity.outputs if not o.passed)


def publish_hint(parity: ParityRecord, kept: Path) -> str:
    """Where the variant was kept and the flags that would publish it."""
    failing = [o for o in parity.outputs if not o.passed]
    flags = []
    agreements = [o.top1_agreement for o in failing if _gated_on_agreement(o, parity) and o.top1_agreement is not None]
    if agreements:
        reached = min(agreements)
        flags.append(f"--min-agreement {math.floor(100 * reached) / 100:.2f} (it reached {100 * reached:.1f}%)")
    errors = [o.max_abs_error for o in failing if not o.detail and not _gated_on_agreement(o, parity)]
    if errors:
        flags.append(f"looser --atol/--rtol (its max abs error is {max(errors):.3g})")
    flags.append("--allow-mismatch")
    where = f"kept in {kept}, not served; to publish it, export again with {' or '.join(flags)}"
    return _wrong_values(failing, parity) + where


def _wrong_values(failing: list[OutputParity], parity: ParityRecord) -> str:
    """Errors many times the values themselves are no rounding: say so before offering looser tolerances."""
    wrong = [o for o in failing if not o.detail and not _gated_on_agreement(o, parity) and o.max_rel_error >= _WRONG]
    if not wrong:
        return ""
    worst = max(wrong, key=lambda o: o.max_rel_error)
    return (
        f"output {worst.name!r} is off by up to {worst.max_rel_error:.3g} times its own values: the artifact "
        f"computes something else there (a converter's lowering of an op), which looser tolerances would only hide; "
    )


def rejected_versions(repository: Path) -> list[tuple[Path, ModelManifest]]:
    """Every readable rejected version in ``repository``, by model name and version."""
    found = []
    for path in sorted((repository / REJECTED_DIR).glob(f"*/*/{MANIFEST_FILE}")):
        if not path.parent.name.isdigit():
            continue
        try:
            found.append((path.parent, read_manifest(path.parent)))
        except ModelportError:
            continue
    return found


def _gated_on_agreement(output: OutputParity, parity: ParityRecord) -> bool:
    return parity.gate == "agreement" and output.top1_agreement is not None and not output.detail


def _miss(output: OutputParity, parity: ParityRecord) -> str:
    if _gated_on_agreement(output, parity) and output.top1_agreement is not None:
        return f"top-1 agreement {100 * output.top1_agreement:.1f}% < {100 * (parity.min_agreement or 0):.1f}%"
    return (
        f"max abs error {output.max_abs_error:.3g} (rel {output.max_rel_error:.3g}) "
        f"exceeds atol={parity.atol:g} rtol={parity.rtol:g}"
    )
