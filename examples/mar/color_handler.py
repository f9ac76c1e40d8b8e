"""A TorchServe custom handler, as TorchServe users write them: Pillow in, the top 2 colours out.

``examples/migrate_torchserve.py`` archives it with ``torch-model-archiver`` and a TorchScript model
(``logits = 4 * mean RGB``), then migrates the archive to modelport, which runs this file unchanged.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

SIZE = (8, 8)


class ColorHandler(BaseHandler):  # type: ignore[misc]
    """``initialize`` (BaseHandler's) loads the TorchScript file and ``index_to_name.json`` as ``self.mapping``."""

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        """Each request's image (the raw body, or a multipart part) as its mean red, green and blue in 0..1."""
        rows = []
        for row in data:
            image = Image.open(io.BytesIO(row.get("data") or row.get("body"))).convert("RGB").resize(SIZE)
            rows.append(torch.tensor(list(image.getdata()), dtype=torch.float32).mean(dim=0) / 255)
        return torch.stack(rows)

    def postprocess(self, data: torch.Tensor) -> list[dict[str, float]]:
        """Each row's two most likely colours by name, as TorchServe's image_classifier answers."""
        top = torch.topk(torch.softmax(data, dim=1), 2, dim=1)
        return [
            {self.mapping[str(int(index))]: round(float(p), 4) for p, index in zip(probabilities, indices, strict=True)}
            for probabilities, indices in zip(top.values, top.indices, strict=True)
        ]
