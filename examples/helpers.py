"""What the serving examples share: tiny ONNX graphs exported into a repository, images, curl, checks."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import modelport
from modelport.manifest import TensorSpec

__all__ = ["check", "close", "curl", "export_onnx", "save_onnx", "softmax_top", "write_image"]


def save_onnx(path: Path, nodes: Sequence[Any], inputs: Sequence[Any], outputs: Sequence[Any], **weights: Any) -> Path:
    """An ONNX model (opset 18) of ``nodes`` with the numpy ``weights`` as named initializers."""
    from onnx import helper, numpy_helper, save

    tensors = [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()]
    graph = helper.make_graph(list(nodes), path.stem, list(inputs), list(outputs), tensors)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def export_onnx(source: Path, spec: str, repo: Path, name: str) -> Path:
    """``modelport.export`` of an ONNX file into ``repo``: the model folder (``NAME-onnx``)."""
    report = modelport.export(source=str(source), formats=("onnx",), inputs=(TensorSpec.parse(spec),),
                              repository=repo, name=name, quiet=True)  # fmt: skip
    if [row.status for row in report.rows] != ["pass"]:
        raise SystemExit(f"export of {name} failed: {report.rows}")
    return repo / f"{name}-onnx"


def write_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    """A plain image of one colour (the format follows the suffix)."""
    Image.new("RGB", size, rgb).save(path)
    return path


def curl(*arguments: str) -> str:
    """What ``curl -sS --fail-with-body ARGUMENTS`` prints (a failed request ends the example)."""
    return subprocess.run(["curl", "-sS", "--fail-with-body", *arguments], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def softmax_top(logits: np.ndarray[Any, Any], labels: Sequence[str], k: int) -> dict[str, float]:
    """The ``k`` best classes of one row of logits with their softmax probabilities, best first."""
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    return {labels[i]: float(scores[i]) for i in np.argsort(-scores, kind="stable")[:k]}


def close(answer: Any, expected: Any, tolerance: float = 1e-3) -> bool:
    """The same JSON shape, keys and strings, numbers within ``tolerance``."""
    if isinstance(expected, dict):
        return (
            isinstance(answer, dict)
            and list(answer) == list(expected)
            and all(close(answer[key], value, tolerance) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(answer, list)
            and len(answer) == len(expected)
            and all(close(a, e, tolerance) for a, e in zip(answer, expected, strict=True))
        )
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return isinstance(answer, float | int) and abs(answer - expected) <= tolerance
    return bool(answer == expected)


def check(what: str, answer: Any, expected: Any) -> bool:
    """Print ``what: answer`` and whether it is the expected one (``close``)."""
    ok = close(answer, expected)
    print(f"{what}: {answer}" + ("" if ok else f"  WRONG, expected {expected}"))
    return ok
