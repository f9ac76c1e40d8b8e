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
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.helpers import curl, export_onnx, save_onnx, write_image
from modelport.launcher import LaunchOptions, launched

LABELS = {"0": "red", "1": "green", "2": "blue", "3": "dark"}
PROCESSORS = {
    "pre": [{"kind": "image", "resize": 32, "center_crop": 32}],
    "post": [{"kind": "topk", "k": 2, "activation": "softmax"}],
}


def write_onnx(path: Path) -> Path:
    """logits = [mean R, mean G, mean B, 1 - mean] of a [batch, 3, H, W] image in 0..1."""
    from onnx import TensorProto, helper

    weights = np.array([[1, 0, 0, -1 / 3], [0, 1, 0, -1 / 3], [0, 0, 1, -1 / 3]], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
        helper.make_node("Gemm", ["means", "weights", "bias"], ["logits"]),
    ]
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
    return save_onnx(path, nodes, [pixels], [logits], weights=weights, bias=np.eye(4, dtype=np.float32)[3])


def build_repository(work: Path) -> Path:
    """WORKDIR/repo/colors-onnx with its config.yaml (processors) and index_to_name.json."""
    model = export_onnx(write_onnx(work / "colors.onnx"), "pixels:float32:-1x3x32x32", work / "repo", "colors")
    (model / "config.yaml").write_text(yaml.safe_dump({"processors": PROCESSORS}))
    (model / "1" / "index_to_name.json").write_text(json.dumps(LABELS))
    return work / "repo"


def main(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)  # `python examples/X.py out/` makes out/
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
