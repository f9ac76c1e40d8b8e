"""Shared fixtures: the trained digits models (trained once per session, in seconds)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Digits:
    """Paths of the trained example models and their held-out split."""

    folder: Path

    @property
    def torch_weights(self) -> Path:
        return self.folder / "digits_torch.pt"

    @property
    def keras_model(self) -> Path:
        return self.folder / "digits.keras"

    @property
    def eval_nchw(self) -> Path:
        return self.folder / "eval_nchw.npz"

    @property
    def eval_nhwc(self) -> Path:
        return self.folder / "eval_nhwc.npz"


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """Train both digits CNNs once; the training script itself checks >= 95% accuracy."""
    from examples.digits import train

    folder = tmp_path_factory.mktemp("digits")
    assert train.main(["--out", str(folder)]) == 0, "a digits model trained below 95% test accuracy"
    return Digits(folder)


@dataclass(frozen=True)
class DigitsRepo:
    """Both digits models exported to every format (torch as ``digits``, Keras as ``kdigits``)."""

    root: Path
    torch: Any
    keras: Any


@pytest.fixture(scope="session")
def digits_repo(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> DigitsRepo:
    import modelport

    root = tmp_path_factory.mktemp("digits-repo")
    torch_report = modelport.export(
        source="examples.digits.torch_model:cnn",
        weights=digits.torch_weights,
        repository=root,
        name="digits",
        quantize=("float16", "dynamic-int8", "full-int8", "static-int8"),
        eval_data=digits.eval_nchw,
        quiet=True,
    )
    keras_report = modelport.export(
        source=str(digits.keras_model),
        repository=root,
        name="kdigits",
        eval_data=digits.eval_nhwc,
        quiet=True,
        quantize=("float16", "dynamic-int8", "full-int8", "static-int8"),
    )
    return DigitsRepo(root, torch_report, keras_report)
