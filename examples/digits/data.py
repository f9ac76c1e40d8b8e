"""scikit-learn's bundled 8x8 digits (no download), split once, reproducibly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
TEST_FRACTION = 0.25


def load_split() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(x_train, y_train, x_test, y_test): images scaled to [0, 1], shape (N, 8, 8), float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def save_eval(path: Path, images: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> Path:
    """The held-out split as ``{"image": ..., "labels": ...}``, what ``--eval-data`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=images, labels=labels)
    return path
