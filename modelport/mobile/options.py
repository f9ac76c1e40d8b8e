"""Options of one ``modelport bundle`` run, and where its variants come from in the repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.errors import InvalidArgumentError

__all__ = ["BUNDLE_VARIANTS", "BundleOptions", "parse_variants"]

# bundle variant -> the repository variant (``modelport export`` naming) it is taken from
BUNDLE_VARIANTS = {
    "float32": "tflite",
    "float16": "tflite-float16",
    "dynamic-int8": "tflite-dynamic-int8",
    "full-int8": "tflite-full-int8",
}
_ALIASES = {"int8": "dynamic-int8", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class BundleOptions:
    """What to bundle (``REPO/NAME[/VERSION]``), where to, and how to describe it."""

    target: Path
    out: Path
    variants: tuple[str, ...] = ()  # empty: every TFLite variant the repository holds
    ort: bool = False
    labels: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    eval_data: Path | None = None
    processors: Path | None = None  # default: the model's config.yaml ``processors:``
    samples: tuple[Path, ...] = ()  # raw inputs (images) answered by the server's pipeline, checked by verify
    latency_runs: int = 100
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("target", "out", "labels", "eval_data", "processors"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "samples", tuple(Path(p) for p in self.samples))
        if isinstance(self.variants, str):
            object.__setattr__(self, "variants", parse_variants(self.variants))
        if (self.mean is None) != (self.std is None):
            raise InvalidArgumentError("--mean and --std go together: give both or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise InvalidArgumentError(f"--mean has {len(self.mean)} values but --std has {len(self.std)}")
            if any(s == 0 for s in self.std):
                raise InvalidArgumentError("--std values must be non-zero")
        if self.latency_runs < 1:
            raise InvalidArgumentError(f"latency runs must be positive, got {self.latency_runs}")


def parse_variants(text: str) -> tuple[str, ...]:
    """Parse ``float32,float16,int8`` (``int8`` = dynamic-range int8), rejecting unknown names."""
    names = tuple(_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BUNDLE_VARIANTS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown bundle variant {unknown[0]!r}; "
            f"expected any of: {', '.join(BUNDLE_VARIANTS)} (int8 = dynamic-int8)"
        )
    if not names:
        raise InvalidArgumentError(f"--variants is empty; give any of: {', '.join(BUNDLE_VARIANTS)}")
    return tuple(dict.fromkeys(names))
