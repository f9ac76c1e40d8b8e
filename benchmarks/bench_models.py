"""The two serving-benchmark models, in plain PyTorch with fixed seeds.

* ``mlp``: 64 -> 256 -> 256 -> 10, tiny, so serving overhead dominates;
* ``resnet18``: ResNet-18 (ImageNet layout, 1000 classes) at 3x224x224, compute-bound;
* ``smallcnn``: three strided convolutions and a 1000-way head at 3x224x224 (~10 M multiply-adds, well
  under a millisecond), so serving JPEGs to it is bound by decoding and preprocessing, not the model.

torchvision is not a dependency, so the ResNet-18 is written out here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MODELS", "BenchModel", "build"]


@dataclass(frozen=True)
class BenchModel:
    """A benchmark model: its input shape (without the batch dim) and output width."""

    name: str
    input_shape: tuple[int, ...]
    output_width: int


MODELS: dict[str, BenchModel] = {
    "mlp": BenchModel("mlp", (64,), 10),
    "resnet18": BenchModel("resnet18", (3, 224, 224), 1000),
    "smallcnn": BenchModel("smallcnn", (3, 224, 224), 1000),
}


class MLP(nn.Module):
    """64 -> 256 -> 256 -> 10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18: stem, four stages of two basic blocks, global pooling, 1000-way linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        stages, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class SmallCNN(nn.Module):
    """An ImageNet-shaped classifier at a fraction of the cost: a 4x4/4 patch stem (3 -> 16, 56x56), two
    3x3/2 convolutions (-> 32, 28x28 -> 64, 14x14), global pooling and a 1000-way linear head. The head's
    weights are scaled up so that random weights still give distinct, well separated top-5 classes."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 4, 4), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        with torch.no_grad():
            self.fc.weight.mul_(100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.features(x))).reshape(x.shape[0], -1))


def build(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model in eval mode (deterministic for a given seed)."""
    torch.manual_seed(seed)
    model: nn.Module = {"mlp": MLP, "resnet18": ResNet18, "smallcnn": SmallCNN}[name]()
    return model.eval()
