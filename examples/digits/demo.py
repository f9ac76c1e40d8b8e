"""`make demo`: train both digits CNNs, export each to every format, show the reports, serve them all,
compare the formats of one and the two frameworks side by side.

    python examples/digits/demo.py --out demo-out

The PyTorch model goes to ONNX, TorchScript, torch.export, TFLite (float32, float16,
int8) and ORT plus ONNX int8 variants; the Keras model to SavedModel, TFLite (float32,
float16, int8), ONNX and ORT. Every artifact is checked against its source on the held-out digits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.digits import train
from modelport.cli import main as modelport
from modelport.quiet import quiet_frameworks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)
    quiet_frameworks()  # training imports TensorFlow before the first modelport command would
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
            "float16,dynamic-int8,full-int8,static-int8",
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
    print("\n==> modelport bundle: edge bundles of both models, verified by their own modelport_edge.py", flush=True)
    status |= _bundle_all(repo, models, args.out / "bundles")
    print("\n==> modelport serve: every variant answers its golden input over KServe v2 (JSON and binary)", flush=True)
    status |= _serve_all(repo)
    print("\n==> modelport compare: every format of the PyTorch model under the same load", flush=True)
    status |= _compare(repo, args.out)
    print("\n==> modelport compare --families: PyTorch vs Keras (their ONNX exports) under the same load", flush=True)
    status |= _shoot_out(repo, args.out)
    return status


def _bundle_all(repo: Path, models: Path, out: Path) -> int:
    """Both bundles with the image processing of processors.yaml and 8 held-out digits as PNG samples."""
    import subprocess

    import numpy as np

    from examples.digits.data import save_images

    held_out = np.load(models / "eval_nchw.npz")
    images, labels = held_out["image"][:8, 0], held_out["labels"][:8]
    samples = save_images(out / "sample-images", images[:6], labels[:6])
    samples += save_images(out / "sample-images" / "32px", images[6:], labels[6:], upscale=4)
    processors = Path(__file__).with_name("processors.yaml")
    status = 0
    for name, eval_data in (("digits-torch", "eval_nchw.npz"), ("digits-keras", "eval_nhwc.npz")):
        bundle = out / name
        args = ["bundle", str(repo / name), "--out", str(bundle), "--eval-data", str(models / eval_data), "--quiet"]
        args += ["--processors", str(processors), *(f"--sample={path}" for path in samples)]
        status |= modelport(args)
        sys.stdout.flush()
        edge = [sys.executable, str(bundle / "modelport_edge.py")]
        status |= subprocess.run([*edge, "verify", str(bundle)], check=False).returncode
        print(f"  {samples[0].name} ->", end=" ", flush=True)
        status |= subprocess.run([*edge, "predict", str(bundle), "--image", str(samples[0])], check=False).returncode
    return status


def _serve_all(repo: Path) -> int:
    import numpy as np

    from examples.serve_and_infer import golden_request, infer_binary, infer_json
    from modelport.launcher import LaunchOptions, launched

    failures = 0
    with launched(repo, "--log-level", "warning", options=LaunchOptions(timeout_s=300)) as server:
        url = server.url
        for model in sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")):
            spec, x = golden_request(repo, url, model)
            output = infer_json(url, model, spec, x)
            same = np.array_equal(np.asarray(output["data"], np.float32), infer_binary(url, model, spec, x))
            top1 = int(np.argmax(output["data"]))
            failures += not same
            print(f"  {model:34s} top-1 class {top1}  JSON == binary: {same}")
        failures += _sweep(url, repo.parent / "loadtest")
    failures += server.process.returncode != 0
    return 1 if failures else 0


def _sweep(url: str, out: Path) -> int:
    """A short locust sweep (1, then 8 concurrent users) against the demo server."""
    print("\n==> modelport loadtest: a short sweep against the same server (KServe v2 binary)", flush=True)
    args = ["loadtest", url, "--model", "digits-torch-onnx", "--protocol", "v2-binary", "--users", "1,8"]
    return modelport([*args, "--duration", "3s", "--out", str(out), "--quiet"])


def _compare(repo: Path, out: Path) -> int:
    """The format shoot-out of the PyTorch model; prints where both HTML reports are."""
    args = ["compare", str(repo / "digits-torch"), "--users", "1,8", "--duration", "2s"]
    status = modelport([*args, "--out", str(out / "compare"), "--quiet"])
    print(f"\nHTML reports: {out / 'compare' / 'compare.html'} and {out / 'loadtest' / 'report.html'}")
    return status


def _shoot_out(repo: Path, out: Path) -> int:
    """The framework shoot-out: both families side by side in one table and plot (2 s of load each)."""
    args = ["compare", str(repo), "--families", "digits-torch,digits-keras", "--formats", "onnx", "--users", "8"]
    status = modelport([*args, "--duration", "2s", "--out", str(out / "shoot-out"), "--quiet"])
    print(f"\nframework shoot-out: {out / 'shoot-out' / 'compare.html'}")
    print(f"next: modelport tune {repo / 'digits-torch'} --slo 'p99<20ms' --budget 4m (README: Tuning a deployment)")
    return status


if __name__ == "__main__":
    sys.exit(main())
