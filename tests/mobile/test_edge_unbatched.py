"""Edge bundles of image models without a batch dimension (``max_batch_size: 0``) answer as the server does.

The server serves an image model whose input is ``3xHxW`` (Triton's densenet_onnx kind) by dropping the batch
dimension of 1 its image step makes; the bundle builder ran the step's ``1x3xHxW`` through the model's shape check
and refused the bundle, and ``modelport_edge.py`` fed the model the batch dimension it does not have. A
``1x3xHxW`` input keeps its batch dimension of 1 on both sides. Its ``[classes]`` output is named by the version's
labels.txt on the server; the bundle refused the file ('has no classifier output ([batch, classes])').
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

import modelport
from modelport.mobile import BundleOptions, build_bundle
from modelport.mobile import modelport_edge as edge
from tests.processing.images import encode
from tests.serving.inprocess import served_in_process

pytestmark = [pytest.mark.tflite, pytest.mark.torch]

SHAPES = {"fixed4": "1x3x8x8", "fixed3": "3x8x8"}
LABELS = ["ant", "bee", "cat", "dog", "eel"]  # output [1, 5] and [5]: class scores with or without a batch dim
PROCESSORS = {
    "pre": [{"kind": "image", "resize": 8, "center_crop": 8}],
    "post": [{"kind": "topk", "k": 3, "activation": "softmax"}],
}


def tiny_cnn(batched: bool) -> Any:
    """A conv and a linear layer over a ``1x3xHxW`` (``batched``) or ``3xHxW`` image -> 5 logits."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 5)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = image if batched else image.unsqueeze(0)
            logits = self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))
            return logits if batched else logits[0]

    torch.manual_seed(3)
    return Tiny().eval()


def _images(directory: Path) -> list[Path]:
    """A JPEG, a PNG with alpha, a grayscale PNG and an EXIF-rotated JPEG, none of them 8x8."""
    from PIL import Image

    rng = np.random.default_rng(5)
    rotated = Image.Exif()
    rotated[0x0112] = 6
    images = {
        "photo.jpg": (Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)), "JPEG", {}),
        "alpha.png": (Image.fromarray(rng.integers(0, 256, (20, 15, 4), dtype=np.uint8), "RGBA"), "PNG", {}),
        "gray.png": (Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L"), "PNG", {}),
        "rotated.jpg": (Image.fromarray(rng.integers(0, 256, (12, 21, 3), dtype=np.uint8)), "JPEG", {"exif": rotated}),
    }
    paths = []
    for name, (image, fmt, extra) in images.items():
        paths.append(directory / name)
        paths[-1].write_bytes(encode(image, fmt, **extra))
    return paths


@pytest.fixture(scope="module")
def unbatched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[str, Path]]:
    """Both models exported to TFLite with ``max_batch_size: 0``, their processors, samples and bundles."""
    root = tmp_path_factory.mktemp("unbatched")
    samples = _images(root)
    bundles = {}
    for name, shape in SHAPES.items():
        report = modelport.export(
            source=tiny_cnn(name == "fixed4"),
            repository=root / "repo",
            name=name,
            formats=("tflite",),
            inputs=[f"image:float32:{shape}"],
            layouts={"image": "NCHW"},
            max_batch_size=0,
            quiet=True,
        )
        assert [r.status for r in report.rows] == ["pass"], report.rows
        (root / "repo" / f"{name}-tflite" / "config.yaml").write_text(yaml.safe_dump({"processors": PROCESSORS}))
        Path(report.rows[0].path, "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
        bundles[name] = root / f"bundle-{name}"
        build_bundle(BundleOptions(root / "repo" / name, bundles[name], samples=tuple(samples), quiet=True))
    return root / "repo", samples, bundles


@pytest.fixture
async def http(unbatched) -> AsyncIterator[httpx.AsyncClient]:
    async with served_in_process(unbatched[0], max_queue_delay_ms=2) as client:
        yield client


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_the_device_answers_each_image_as_the_server_does(unbatched, http, name):
    _, samples, bundles = unbatched
    model = edge.EdgeModel.open(bundles[name])  # verifies the golden vectors and the raw samples
    assert model.bundle["max_batch_size"] == 0
    for sample in samples:
        served = await http.post(f"/predictions/{name}-tflite", content=sample.read_bytes())
        assert served.status_code == 200, served.text
        device = model.classify_image(sample)  # the bundle's top-k, the server's answer
        assert isinstance(device, dict)
        assert list(device) == list(served.json()), sample.name
        assert np.allclose(list(device.values()), list(served.json().values()), atol=1e-6), sample.name
    tensors = model.preprocess_image(samples[0])
    assert list(tensors["image"].shape) == [int(d) for d in SHAPES[name].split("x")]
    assert model.labels == LABELS
    [best] = model.top_k(tensors["image"], k=2)
    assert [label for label, _ in best] == list(model.classify_image(samples[0], k=2))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_verify_and_predict_run_on_the_device(unbatched, name, capsys):
    _, samples, bundles = unbatched
    assert edge.main(["verify", str(bundles[name])]) == 0
    assert "4 raw samples" in capsys.readouterr().out
    assert edge.main(["predict", str(bundles[name]), "--image", str(samples[1])]) == 0
    printed = capsys.readouterr().out
    assert len(json.loads(printed)) == 3


def test_a_mean_per_channel_normalizes_the_channels_of_a_model_without_a_batch_dimension(unbatched, tmp_path):
    """``--mean`` with one value per channel: NCHW's channels are axis 0 of ``3x8x8`` (it said: 8 channels)."""
    repo, _, _ = unbatched
    out = tmp_path / "normalized"
    build_bundle(BundleOptions(repo / "fixed3", out, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), quiet=True))
    model = edge.EdgeModel.open(out)
    pixels = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.5], np.float32)
    direct = model.run({"image": (pixels - mean[:, None, None]) / std[:, None, None]})
    assert np.array_equal(model.predict(pixels)["output_0"], direct["output_0"])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_eval_data_has_one_row_an_example(unbatched, tmp_path, name):
    """``--eval-data`` of a 3x8x8 model is Nx3x8x8, as of a 1x3x8x8 one (it wanted Nx8x8 and refused it)."""
    import torch

    images = np.random.default_rng(1).random((7, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        labels = tiny_cnn(batched=True)(torch.from_numpy(images)).argmax(dim=1).numpy()
    np.savez(tmp_path / "eval.npz", image=images, labels=labels)
    options = BundleOptions(unbatched[0] / name, tmp_path / "b", eval_data=tmp_path / "eval.npz", quiet=True)
    [row] = build_bundle(options).rows
    assert (row.accuracy, row.eval_samples) == (1.0, 7)
