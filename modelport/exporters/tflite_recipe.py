"""TFLiteConverter runs from a declarative recipe, in-process or in a child process.

Full-int8 calibration runs TensorFlow's calibrator, which can crash the whole process
on some graphs (seen: Keras LSTM). It therefore runs in a child process, so a crash
becomes one failed variant instead of a lost export.

    python -m modelport.exporters.tflite_recipe SAVED_MODEL OUT.tflite METHOD [CALIBRATION.npz] [--float-io]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.exporters.artifact import run_tool
from modelport.runtimes.base import import_framework

__all__ = ["TFLiteRecipe", "convert", "convert_isolated", "main"]

SERVING_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TFLiteRecipe:
    """How to convert: ``method`` None (float32), float16, dynamic-int8 or full-int8."""

    method: str | None = None
    calibration: Path | None = None  # .npz of samples keyed by signature input name (full-int8)
    int8_inputs: bool = True  # full-int8: int8 inputs too (only when every input is float)

    @property
    def isolated(self) -> bool:
        return self.method == "full-int8"


def convert(saved: Path, recipe: TFLiteRecipe) -> bytes:
    """Convert the SavedModel's serving signature in this process."""
    tf = import_framework("tensorflow", "tf")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SERVING_SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if recipe.method is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.method == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif recipe.method == "full-int8":
        if recipe.calibration is None:
            raise ValueError("full-int8 needs calibration data")
        calibration = recipe.calibration
        converter.representative_dataset = lambda: _samples(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if recipe.int8_inputs:
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    flatbuffer: bytes = converter.convert()
    return flatbuffer


def convert_isolated(saved: Path, recipe: TFLiteRecipe, out: Path) -> bytes:
    """Convert in a child process; a crash there is a ``ConversionError`` here."""
    args = ["-m", "modelport.exporters.tflite_recipe", str(saved), str(out), recipe.method or "float32"]
    if recipe.calibration is not None:
        args.append(str(recipe.calibration))
    if not recipe.int8_inputs:
        args.append("--float-io")
    run_tool(args, f"TFLiteConverter {recipe.method or 'float32'}")
    return out.read_bytes()


def _samples(path: Path) -> Iterator[dict[str, np.ndarray[Any, Any]]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    rows = len(next(iter(arrays.values())))
    for i in range(rows):
        yield {name: value[i : i + 1] for name, value in arrays.items()}


def main(argv: list[str]) -> int:
    """Child-process entry: convert, write the flatbuffer, report an error on one line."""
    flags = [a for a in argv if a.startswith("--")]
    saved, out, method, *rest = [a for a in argv if not a.startswith("--")]
    recipe = TFLiteRecipe(
        method=None if method == "float32" else method,
        calibration=Path(rest[0]) if rest else None,
        int8_inputs="--float-io" not in flags,
    )
    try:
        Path(out).write_bytes(convert(Path(saved), recipe))
    except Exception as exc:
        message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"conversion error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
