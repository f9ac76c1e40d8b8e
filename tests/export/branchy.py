"""Test models whose artifacts legitimately differ from the source, to prove the gates fail."""

from __future__ import annotations

import torch
from torch import nn


class SignBranch(nn.Module):
    """Data-dependent control flow: a trace bakes in one branch (export scripts it instead; torch.export refuses)."""

    input_specs = ("x:float32:-1x4",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return x * 2.0
        return x * -3.0


def sign_branch() -> SignBranch:
    return SignBranch()


def not_a_module() -> dict[str, int]:
    return {"not": 1}


def broken_factory() -> nn.Module:
    raise RuntimeError("the factory itself fails")


class Small(nn.Module):
    input_specs = ("x:float32:-1x4",)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def small() -> Small:
    return Small()


class UniqueOp(nn.Module):
    """torch.unique has a data-dependent output shape: torch.export-based converters refuse it."""

    input_specs = ("x:int64:-1x6:0..5",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.unique(x)


def unique_op() -> UniqueOp:
    return UniqueOp()


class SmallVocab(nn.Module):
    """An embedding of 5 rows over ids declared without a value range (golden ids 0..9 overrun it)."""

    input_specs = ("ids:int64:-1x-1",)

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).mean(1)


def small_vocab() -> SmallVocab:
    return SmallVocab()


def saturated() -> Small:
    """Weights that make every input give the same logits (a ReLU that never fires): the gate compares constants."""
    model = Small()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return model


class FrozenScale(nn.Module):
    """A tensor read as a Python number: tracing bakes in the traced input's value as a constant (the
    TorchScript trap export does not script its way around, unlike an ``if`` on a tensor)."""

    input_specs = ("x:float32:-1x4",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / float(x.abs().max())


def frozen_scale() -> FrozenScale:
    return FrozenScale()
