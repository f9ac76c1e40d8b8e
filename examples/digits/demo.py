"""`make demo`: train both digits CNNs, export each to every format it supports, show the reports.

    python examples/digits/demo.py --out demo-out

The PyTorch model goes to ONNX, TorchScript, torch.export, TFLite and ORT plus ONNX
int8 variants; the Keras model to SavedModel, TFLite (float32, float16, int8), ONNX
and ORT. Every artifact is checked against its source on the held-out digits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.digits import train
from modelport.cli import main as modelport


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)
    models, repo = args.out / "models", args.out / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    print("==> training the digits CNNs (PyTorch and Keras) on scikit-learn's bundled digits", flush=True)
    if train.main(["--out", str(models)]) != 0:
        return 1
    status = 0
    print("\n==> modelport export: PyTorch CNN -> every format", flush=True)
    status |= modelport(
        [
            "export",
            "examples.digits.torch_model:cnn",
            "--weights",
            str(models / "digits_torch.pt"),
            "--format",
            "all",
            "--quantize",
            "dynamic-int8,static-int8",
            "--eval-data",
            str(models / "eval_nchw.npz"),
            "--repository",
            str(repo),
            "--name",
            "digits-torch",
        ]
    )
    print("\n==> modelport export: Keras CNN -> every format", flush=True)
    status |= modelport(
        [
            "export",
            str(models / "digits.keras"),
            "--format",
            "all",
            "--quantize",
            "float16,dynamic-int8,full-int8,static-int8",
            "--eval-data",
            str(models / "eval_nhwc.npz"),
            "--repository",
            str(repo),
            "--name",
            "digits-keras",
        ]
    )
    print("\n==> modelport inspect", flush=True)
    status |= modelport(["inspect", str(repo)])
    return status


if __name__ == "__main__":
    sys.exit(main())
