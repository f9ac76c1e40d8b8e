"""The application benchmark's custom TorchServe handler: JPEG bytes in, top-5 ``{label: probability}`` out.

What a TorchServe user writes for an ImageNet classifier, without torchvision: Pillow decodes each request's
image (RGB), resizes its shorter side to 256 (bilinear), center-crops 224x224 and normalizes with the ImageNet
mean and std, exactly as ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()`` and ``Normalize`` do on PIL
images; the batch goes through the TorchScript model once, then softmax and top-5 with the archive's
``index_to_name.json``. The same archive runs in TorchServe (a) and, through ``modelport import-mar``, in
modelport (b). Threads: ``MODELPORT_BENCH_THREADS`` (default 1), as in the other benchmark handlers.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
RESIZE, CROP, TOPK = 256, 224, 5


class ImageClassifierHandler(BaseHandler):  # type: ignore[misc]
    """BaseHandler loads ``model.pt`` and ``index_to_name.json``; this adds the image pre- and postprocessing."""

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(int(os.environ.get("MODELPORT_BENCH_THREADS", "1")) or 1)
        super().initialize(context)

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        """One [3, 224, 224] float32 tensor per request, stacked."""
        images = [_image_tensor(row.get("data") or row.get("body")) for row in data]
        return torch.from_numpy(np.stack(images))

    def postprocess(self, data: torch.Tensor) -> list[dict[str, float]]:
        """Softmax, then the top 5 classes of each row by name."""
        probabilities, classes = torch.topk(torch.softmax(data, dim=1), TOPK, dim=1)
        names = self.mapping or {}
        return [
            {names.get(str(c), str(c)): p for c, p in zip(row_classes, row_probs, strict=True)}
            for row_classes, row_probs in zip(classes.tolist(), probabilities.tolist(), strict=True)
        ]


def _image_tensor(payload: bytes | bytearray) -> np.ndarray[Any, Any]:
    image = Image.open(io.BytesIO(payload)).convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    scaled = int(RESIZE * long / short)
    size = (RESIZE, scaled) if width <= height else (scaled, RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - CROP) / 2.0), round((size[1] - CROP) / 2.0)
    image = image.crop((left, top, left + CROP, top + CROP))
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    return (pixels - MEAN) / STD
