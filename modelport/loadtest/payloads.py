"""Request inputs for a load test: valid random tensors from the specs, the golden inputs, a user .npz, or a
directory of files (images, texts) for a model that takes payloads (one BYTES input)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from modelport.errors import InvalidArgumentError, SpecError
from modelport.golden import load_golden, load_npz_inputs, random_inputs
from modelport.manifest import TensorSpec
from modelport.tensors import Arrays, format_shape

__all__ = ["merge_specs", "resolve_specs", "sample_inputs"]


def merge_specs(served: tuple[TensorSpec, ...] | None, given: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The served model's inputs with ``--input`` specs replacing those of the same name."""
    if served is None:
        return given
    by_name = {s.name: s for s in given}
    unknown = sorted(set(by_name) - {s.name for s in served})
    if unknown:
        raise SpecError(f"--input names {unknown} are not inputs of the model (it has {[s.name for s in served]})")
    return tuple(by_name.get(s.name, s) for s in served)


def resolve_specs(specs: tuple[TensorSpec, ...], batch_size: int) -> tuple[TensorSpec, ...]:
    """Concrete shapes: a dynamic first dim becomes ``batch_size``; other dynamic dims need ``--input``."""
    resolved = []
    for spec in specs:
        shape = list(spec.shape)
        if shape and shape[0] == -1:
            shape[0] = batch_size
        elif batch_size != 1:
            raise InvalidArgumentError(
                f"--batch-size {batch_size}: input {spec.name!r} has no dynamic batch dimension ({spec.describe()})"
            )
        if -1 in shape:
            example = format_shape(tuple(batch_size if i == 0 else 16 for i in range(len(shape))))
            raise SpecError(
                f"input {spec.name!r} has dynamic dimensions ({spec.describe()}): give them with "
                f"--input {spec.name}:{spec.dtype}:{example}"
            )
        resolved.append(spec.model_copy(update={"shape": tuple(shape)}))
    return tuple(resolved)


def sample_inputs(specs: tuple[TensorSpec, ...], data: str, samples: int, seed: int) -> list[Arrays]:
    """``samples`` request inputs for concrete ``specs``: ``random``, a golden.npz, an .npz keyed by input name,
    or a directory of files, each one payload of the model's one BYTES input."""
    if data != "random" and Path(data).is_dir():
        return _files(Path(data), specs, samples)
    if data == "random":
        rng = np.random.default_rng(seed)
        return [random_inputs(specs, specs[0].shape[0] if specs[0].shape else 1, 1, rng) for _ in range(samples)]
    path = Path(data)
    if not path.exists():
        raise InvalidArgumentError(
            f"--data {data!r}: expected 'random', an existing .npz file or a directory of files (images, texts)"
        )
    if not zipfile.is_zipfile(path):  # np.load would call a JPEG "pickled (object) data"
        raise InvalidArgumentError(
            f"--data {data}: not an .npz; to send files (images, texts) as payloads, give their directory"
        )
    if _is_golden(path):
        cases = [case.inputs for case in load_golden(path)]
        missing = {s.name for s in specs} - set(cases[0]) if cases else set()
        if not cases or missing:
            raise SpecError(f"--data {path}: golden inputs lack {sorted(missing)}")
        return [{s.name: case[s.name] for s in specs} for case in cases]
    arrays, _ = load_npz_inputs(path, specs, "--data")
    return _slices(arrays, specs, samples)


def _is_golden(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return any(key.startswith("case0/inputs/") for key in data.files)
    except Exception as exc:
        raise InvalidArgumentError(f"--data {path} is not a readable .npz: {exc}") from None


def _slices(arrays: Arrays, specs: tuple[TensorSpec, ...], samples: int) -> list[Arrays]:
    """Consecutive slices of ``batch`` rows (the first dim of the resolved specs) from a data file."""
    batch = specs[0].shape[0] if specs[0].shape else 1
    rows = min(len(a) for a in arrays.values())
    if rows < batch:
        raise InvalidArgumentError(f"--data has {rows} rows, fewer than one request of {batch}")
    count = min(samples, rows // batch)
    return [{n: a[i * batch : (i + 1) * batch] for n, a in arrays.items()} for i in range(count)]


def _files(directory: Path, specs: tuple[TensorSpec, ...], samples: int) -> list[Arrays]:
    """Requests of ``batch`` files each (the spec's first dim), cycling through the directory's files in order."""
    if len(specs) != 1 or specs[0].dtype != "string":
        described = ", ".join(s.describe() for s in specs)
        raise InvalidArgumentError(
            f"--data {directory}: files need a model with one BYTES input (payloads); it takes {described}"
        )
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InvalidArgumentError(f"--data {directory}: the directory holds no files")
    contents = [p.read_bytes() for p in files]
    batch = specs[0].shape[0] if specs[0].shape else 1
    count = max(1, min(samples, len(contents)))
    return [
        {specs[0].name: np.array([contents[(i * batch + j) % len(contents)] for j in range(batch)], dtype=object)}
        for i in range(count)
    ]
