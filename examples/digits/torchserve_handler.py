"""A TorchServe handler for the digits models, in the shape TorchServe's own handlers take.

Each request body is one instance as JSON: the 1x8x8 image as a nested list, bare or under
``"data"``. TorchServe batches concurrent requests; ``handle`` stacks them, runs the TorchScript
model once and answers each request with its row of logits as a JSON list. Archive it with::

    torch-model-archiver --model-name digits --version 1.0 --serialized-file model.pt \\
        --handler examples/digits/torchserve_handler.py --export-path model_store
"""

from __future__ import annotations

import json
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler


class DigitsHandler(BaseHandler):  # type: ignore[misc]
    """BaseHandler loads ``model.pt`` (TorchScript); this class decodes and encodes the tensors."""

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        rows = []
        for request in data:
            body = request.get("data") if request.get("data") is not None else request.get("body")
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            if isinstance(body, dict):
                body = body.get("data", body.get("instances"))
            rows.append(torch.as_tensor(body, dtype=torch.float32))
        return torch.stack(rows).to(self.device)

    def postprocess(self, data: torch.Tensor) -> list[list[float]]:
        return data.tolist()  # one list per request of the batch
