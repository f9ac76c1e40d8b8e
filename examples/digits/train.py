"""Train the PyTorch and Keras digits CNNs and save them with the held-out split.

    python examples/digits/train.py --out examples/digits/artifacts

writes digits_torch.pt (state_dict), digits.keras, eval_nchw.npz and eval_nhwc.npz,
and prints each model's test accuracy (both must reach 95%).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.digits.data import load_split, save_eval

MIN_ACCURACY = 0.95


def train_torch(out: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    import torch

    from examples.digits.torch_model import train

    model = train(torch.from_numpy(x_train[:, None]), torch.from_numpy(y_train))
    torch.save(model.state_dict(), out / "digits_torch.pt")
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test[:, None])).argmax(1).numpy()
    return float(np.mean(predicted == y_test))


def train_keras(out: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    from examples.digits.keras_model import train

    model = train(x_train[..., None], y_train)
    model.save(out / "digits.keras")
    predicted = np.argmax(model.predict(x_test[..., None], verbose=0), axis=1)
    return float(np.mean(predicted == y_test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "artifacts")
    parser.add_argument("--only", choices=("torch", "keras"), help="train one framework's model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_split()
    save_eval(args.out / "eval_nchw.npz", x_test[:, None], y_test)
    save_eval(args.out / "eval_nhwc.npz", x_test[..., None], y_test)
    results = {}
    if args.only in (None, "torch"):
        results["torch"] = train_torch(args.out, x_train, y_train, x_test, y_test)
    if args.only in (None, "keras"):
        results["keras"] = train_keras(args.out, x_train, y_train, x_test, y_test)
    for name, acc in results.items():
        print(f"{name} digits CNN: test accuracy {100 * acc:.1f}% on {len(y_test)} held-out images")
    return 0 if all(acc >= MIN_ACCURACY for acc in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
