"""Format latency shoot-out: every exported variant of the digits CNNs, side by side in one run.

    python benchmarks/formats.py [--rounds 7] [--batch 1,32] [--out benchmarks/results/formats.json]

Trains the example models, exports them to every format, then measures the median latency of
each variant through modelport's own runtimes (what the server will run). Variants are timed in
interleaved rounds so machine noise hits them all alike, and every result is reported as a
ratio to the source framework's eager model (``torch`` or ``keras``) measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modelport
from examples.digits import train
from modelport.runtimes import open_runtime

Predict = Callable[[dict[str, Any]], Any]


def _time(predict: Predict, inputs: dict[str, Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        predict(inputs)
    return (time.perf_counter() - start) / calls


def _variants(repo: Path, family: str) -> dict[str, Predict]:
    predictors: dict[str, Predict] = {}
    for directory in sorted(repo.glob(f"{family}-*/1")):
        manifest = modelport.read_manifest(directory)
        if manifest.max_batch_size == 0:
            continue  # static-shape artifacts (litert-torch tflite) run one row at a time
        predictors[manifest.variant] = open_runtime(directory, manifest).predict
    return predictors


def _bench(predictors: dict[str, Predict], sample: np.ndarray[Any, Any], batch: int, rounds: int) -> dict[str, float]:
    inputs = {"image": np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))}
    calls = max(20, 400 // batch)
    for predict in predictors.values():
        _time(predict, inputs, 5)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, predict in predictors.items():
            samples[name].append(_time(predict, inputs, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/formats.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    train.main(["--out", str(work / "models")])
    models, repo = work / "models", work / "repo"
    modelport.export(
        source="examples.digits.torch_model:cnn",
        weights=models / "digits_torch.pt",
        repository=repo,
        name="torch",
        quantize=("dynamic-int8", "static-int8"),
        eval_data=models / "eval_nchw.npz",
        quiet=True,
    )
    modelport.export(
        source=str(models / "digits.keras"),
        repository=repo,
        name="keras",
        quantize=("float16", "dynamic-int8", "full-int8", "static-int8"),
        eval_data=models / "eval_nhwc.npz",
        quiet=True,
    )
    results: dict[str, Any] = {}
    for family, eval_file, baseline in (("torch", "eval_nchw.npz", "torch"), ("keras", "eval_nhwc.npz", "keras")):
        sample = np.load(models / eval_file)["image"][:64]
        predictors = {baseline: _eager(family, models), **_variants(repo, family)}
        for batch in (int(b) for b in args.batch.split(",")):
            medians = _bench(predictors, sample, batch, args.rounds)
            base = medians[baseline]
            results[f"{family}/batch{batch}"] = {
                n: {"median_ms": 1e3 * m, "ratio_to_" + baseline: m / base} for n, m in medians.items()
            }
            print(f"\n{family} digits CNN, batch {batch} (median of {args.rounds} interleaved rounds)")
            for name, m in sorted(medians.items(), key=lambda kv: kv[1]):
                print(f"  {name:22s} {1e3 * m:8.3f} ms   x{m / base:5.2f} of {baseline}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {args.out}")
    return 0


def _eager(family: str, models: Path) -> Predict:
    if family == "torch":
        import torch

        from examples.digits.torch_model import cnn

        model = cnn()
        model.load_state_dict(torch.load(models / "digits_torch.pt", weights_only=True))
        model.eval()

        def run_torch(inputs: dict[str, Any]) -> Any:
            with torch.inference_mode():
                return model(torch.from_numpy(inputs["image"])).numpy()

        return run_torch
    import keras

    keras_model = keras.models.load_model(models / "digits.keras")
    return lambda inputs: keras_model(inputs["image"], training=False).numpy()


if __name__ == "__main__":
    sys.exit(main())
