"""Golden raw samples: files (an image, a sentence) with the outputs recorded on them, re-checked at load.

Golden vectors (``golden.npz``) hold tensors; an application's contract is its raw payloads. A model or
pipeline that takes payloads (one BYTES input) can carry raw samples beside it::

    samples/1-kitten.jpg            the file's bytes, as given
    samples.json                    {"samples": [{"file": "samples/1-kitten.jpg", "content_type": "image/jpeg",
                                                  "outputs": {"output": {"datatype": "BYTES", "shape": [1],
                                                                         "data": ["{\\"tabby\\": 0.41}"]}}}]}

Outputs are written as v2 JSON tensors (BYTES elements as text, or ``{"b64": ...}`` when not UTF-8). They
compare as recorded, with a tolerance for numbers: numeric tensors, and numbers inside JSON text (a
handler's ``{"label": probability}``), match within ``rtol=1e-4, atol=1e-5``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ManifestError, NotFoundError
from modelport.tensors import Arrays, dtype_of_array, lookup_dtype

__all__ = [
    "SAMPLES_DIR",
    "SAMPLES_FILE",
    "RawSample",
    "check_samples",
    "mismatch",
    "payload_batch",
    "read_samples",
    "record_samples",
]

SAMPLES_FILE = "samples.json"
SAMPLES_DIR = "samples"
RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class RawSample:
    """One golden raw sample: its file (relative to its directory), bytes, content type, recorded outputs."""

    file: str
    data: bytes
    content_type: str
    outputs: Arrays


def record_samples(directory: Path, files: Sequence[Path], run: Callable[[bytes], Arrays]) -> list[RawSample]:
    """Copy ``files`` into ``directory/samples/``, run each through ``run`` and write ``samples.json``."""
    samples = []
    for index, path in enumerate(files, start=1):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"sample {path}: cannot read: {exc}") from None
        name = f"{SAMPLES_DIR}/{index}-{path.name}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        samples.append(RawSample(name, data, content_type, run(data)))
    (directory / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        (directory / sample.file).write_bytes(sample.data)
    entries = [{"file": s.file, "content_type": s.content_type, "outputs": _encode(s.outputs)} for s in samples]
    (directory / SAMPLES_FILE).write_text(json.dumps({"samples": entries}, indent=2) + "\n")
    return samples


def read_samples(directory: Path) -> list[RawSample]:
    """The raw samples recorded in ``directory`` ([] when it has none)."""
    path = directory / SAMPLES_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["samples"]
        return [
            RawSample(e["file"], (directory / e["file"]).read_bytes(), e["content_type"], _decode(e["outputs"]))
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: unreadable golden samples: {exc}") from None


def check_samples(directory: Path, run: Callable[[bytes], Arrays]) -> str:
    """Run every recorded sample again: ``""`` when all match, else the first mismatch (which file, how)."""
    for sample in read_samples(directory):
        problem = mismatch(sample.outputs, run(sample.data))
        if problem:
            return f"{sample.file} ({sample.content_type}): {problem}"
    return ""


def mismatch(expected: Arrays, got: Arrays) -> str:
    """How ``got`` differs from the recorded ``expected`` outputs (``""``: it does not)."""
    for name, want in expected.items():
        if name not in got:
            return f"output {name!r} is missing"
        have = np.asarray(got[name])
        if have.shape != want.shape:
            return f"output {name!r} has shape {list(have.shape)}, recorded {list(want.shape)}"
        if want.dtype == object:
            for index, (a, b) in enumerate(zip(want.ravel().tolist(), have.ravel().tolist(), strict=True)):
                if not _same_payload(a, b):
                    return f"output {name!r} element {index} is {_show(b)}, recorded {_show(a)}"
        elif not np.allclose(have.astype(np.float64), want.astype(np.float64), rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
            return f"output {name!r} differs by up to {worst:.3g} (rtol={RTOL:g}, atol={ATOL:g})"
    return ""


def payload_batch(name: str, data: bytes) -> Arrays:
    """One raw sample as a batch of one for a model whose one BYTES input is ``name``."""
    batch = np.empty(1, dtype=object)
    batch[0] = data
    return {name: batch}


def _same_payload(recorded: object, got: object) -> bool:
    a, b = _as_bytes(recorded), _as_bytes(got)
    if a == b:
        return True
    try:
        return _close(json.loads(a), json.loads(b))
    except ValueError:
        return False


def _close(a: Any, b: Any) -> bool:
    """JSON values equal, numbers within the tolerance."""
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]


def _show(value: object) -> str:
    text = _as_bytes(value).decode(errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text))  # one line
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _encode(outputs: Arrays) -> dict[str, Any]:
    encoded = {}
    for name, value in outputs.items():
        dtype = dtype_of_array(value)
        data = [_text(v) for v in value.ravel().tolist()] if dtype.name == "string" else value.ravel().tolist()
        encoded[name] = {"datatype": dtype.v2, "shape": list(value.shape), "data": data}
    return encoded


def _text(value: object) -> object:
    data = _as_bytes(value)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode()}


def _decode(outputs: dict[str, Any]) -> Arrays:
    decoded: Arrays = {}
    for name, tensor in outputs.items():
        dtype = lookup_dtype(tensor["datatype"])
        if dtype.name == "string":
            values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode() for v in tensor["data"]]
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            array = np.asarray(tensor["data"], dtype=dtype.np_dtype())
        decoded[name] = array.reshape(tensor["shape"])
    return decoded
