"""A tiny text classifier over token ids + attention mask (embedding bag + linear), for text bundles."""

from __future__ import annotations

from typing import Any

VOCAB = 200  # tests.processing.tokenizer trains a WordPiece vocabulary of at most 200 pieces
MAX_LENGTH = 16
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
