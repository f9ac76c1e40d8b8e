"""Serve an image classifier that takes image files, and call it with curl and Triton's client.

    python examples/serve_images.py WORKDIR

Builds a tiny ONNX classifier (its logits are the mean red, green and blue of a 32x32 image, and
``dark``), exports it into WORKDIR/repo with ``modelport.export``, gives it processors in its
``config.yaml`` (resize and crop any image to 32x32; answer the top 2 classes by name, as TorchServe's
image_classifier does) and labels, then starts ``modelport serve`` and sends two PNG files:
``curl -T`` (the raw body), ``curl -F`` (multipart, one row per file) and tritonclient BYTES.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
import yaml
from PIL import Image

import modelport
from modelport.launcher import LaunchOptions, launched
from modelport.manifest import TensorSpec

LABELS = {"0": "red", "1": "green", "2": "blue", "3": "dark"}
PROCESSORS = {
    "pre": [{"kind": "image", "resize": 32, "center_crop": 32}],
    "post": [{"kind": "topk", "k": 2, "activation": "softmax"}],
}


def write_onnx(path: Path) -> Path:
    """logits = [mean R, mean G, mean B, 1 - mean] of a [batch, 3, H, W] image in 0..1."""
    from onnx import TensorProto, helper, numpy_helper, save

    weights = np.array([[1, 0, 0, -1 / 3], [0, 1, 0, -1 / 3], [0, 0, 1, -1 / 3]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weights", "bias"], ["logits"]),
        ],
        "colors",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(np.eye(4, dtype=np.float32)[3], "bias")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build_repository(work: Path) -> Path:
    """WORKDIR/repo/colors-onnx with its config.yaml (processors) and index_to_name.json."""
    repo = work / "repo"
    spec = TensorSpec.parse("pixels:float32:-1x3x32x32")
    modelport.export(source=str(write_onnx(work / "colors.onnx")), formats=("onnx",), inputs=(spec,), repository=repo,
                     name="colors", quiet=True)  # fmt: skip
    (repo / "colors-onnx" / "config.yaml").write_text(yaml.safe_dump({"processors": PROCESSORS}))
    (repo / "colors-onnx" / "1" / "index_to_name.json").write_text(json.dumps(LABELS))
    return repo


def write_image(path: Path, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 48), rgb).save(path)
    return path


def curl(*arguments: str) -> str:
    return subprocess.run(["curl", "-sS", "--fail-with-body", *arguments], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def main(work: Path) -> int:
    repo = build_repository(work)
    red, blue = write_image(work / "red.png", (255, 0, 0)), write_image(work / "blue.png", (0, 0, 255))
    with launched(repo, "--log-level", "warning", options=LaunchOptions(timeout_s=120)) as server:
        url = f"{server.url}/predictions/colors-onnx"
        print("curl -T     :", curl("-T", str(red), url))
        print("curl -F     :", curl("-F", f"data=@{red}", "-F", f"data=@{blue}", url))
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        images = triton.InferInput("image", [2], "BYTES")
        images.set_data_from_numpy(np.array([red.read_bytes(), blue.read_bytes()], dtype=object), binary_data=True)
        rows = client.infer("colors-onnx", [images]).as_numpy("output")
        print("tritonclient:", [json.loads(row) for row in rows])
        client.close()
    return server.process.returncode or 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
