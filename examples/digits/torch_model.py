"""A small PyTorch CNN for 8x8 digits; ``cnn`` is the factory ``modelport export`` calls."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a pool and two dense layers; NCHW input in [0, 1]."""

    input_specs = ("image:float32:-1x1x8x8:0..1",)
    output_names = ("logits",)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # reshape, not flatten: litert-torch keeps a dynamic batch through reshape(-1, n)
        return self.head(self.features(image).reshape(-1, 32 * 4 * 4))


def cnn() -> DigitsCNN:
    """Factory for ``modelport export examples.digits.torch_model:cnn --weights ...``."""
    return DigitsCNN()


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 40, seed: int = 0) -> DigitsCNN:
    """Train on (N, 1, 8, 8) images; a few seconds on a CPU."""
    torch.manual_seed(seed)
    model = cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            loss_fn(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()
