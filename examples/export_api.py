"""Export through the Python API: a Keras object and a PyTorch module, no files needed.

python examples/export_api.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modelport
from examples.digits import keras_model, torch_model
from examples.digits.data import load_split
from modelport.exporters.report import render_table


def main(out: Path) -> int:
    x_train, y_train, _, _ = load_split()
    keras_cnn = keras_model.train(x_train[..., None], y_train, epochs=5)
    report = modelport.export(
        source=keras_cnn,
        repository=out / "repo",
        name="api-keras",
        formats=("savedmodel", "tflite"),
        quantize=("float16",),
    )
    print(render_table(report))

    torch_cnn = torch_model.cnn()  # untrained is fine: parity is about the artifact matching its source
    options = modelport.ExportOptions(
        source=torch_cnn,
        repository=out / "repo",
        name="api-torch",
        formats=("onnx", "pt2"),
        inputs=(modelport.TensorSpec.parse("image:float32:-1x1x8x8"),),
        output_names=("logits",),
    )
    report2 = modelport.export(options)
    print(render_table(report2))
    return 0 if report.ok and report2.ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "example-out")))
