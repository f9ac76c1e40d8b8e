"""A tiny text classifier over token ids + attention mask (embedding bag + linear), for text bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.processing.tokenizer import build_tokenizer

VOCAB = 200  # tests.processing.tokenizer trains a WordPiece vocabulary of at most 200 pieces
MAX_LENGTH = 16
SENTENCES = [
    "the cat sat on the mat",
    "",
    "Models SERVE predictions, to clients!",
    "naïve café déjà vu 東京 🙂 zebra",
    "the cat sat on the mat " * 6,  # longer than any max_length below
    "tokenizers split text into pieces",
]
NAMES = {"0": "animals", "1": "nature", "2": "machines"}
INPUTS = (f"input_ids:int64:-1x-1:0..{VOCAB}", "attention_mask:int64:-1x-1:0..2")


def bag() -> Any:
    """Masked mean of the token embeddings -> ``logits`` over 3 classes."""
    import torch
    from torch import nn

    class Bag(nn.Module):
        input_specs = INPUTS
        output_names = ("logits",)

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            keep = attention_mask.to(torch.float32).unsqueeze(-1)
            summed = (self.embed(input_ids) * keep).sum(dim=1)
            return self.head(summed / keep.sum(dim=1).clamp(min=1.0))

    torch.manual_seed(0)
    return Bag().eval()


def text_repo(root: Path, labels: dict[str, object] | None, labels_name: str) -> Path:
    """Export the bag to TFLite (pinned 1 x MAX_LENGTH) with the test tokenizer and a labels file beside it."""
    import modelport

    report = modelport.export(
        source="tests.mobile.text_model:bag",
        repository=root,
        name="text",
        formats=("tflite",),
        tflite_shapes={"input_ids": (1, MAX_LENGTH), "attention_mask": (1, MAX_LENGTH)},
        quiet=True,
    )
    [row] = report.rows
    assert row.status == "pass", row
    version = Path(row.path)
    build_tokenizer(version / "tokenizer.json")  # where the server's text step reads it
    if labels is not None:
        (version / labels_name).write_text(json.dumps(labels))
    return version


def processors_file(path: Path, labels: str | None) -> Path:
    """A processors YAML: the text step, then softmax top-2 (reading ``labels`` when given)."""
    topk = {"kind": "topk", "k": 2, "activation": "softmax", **({"labels": labels} if labels else {})}
    steps = {"pre": [{"kind": "text", "max_length": MAX_LENGTH}], "post": [topk]}
    path.write_text(yaml.safe_dump({"processors": steps}))
    return path
