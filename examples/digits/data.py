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


def save_images(
    folder: Path, images: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], upscale: int = 1
) -> list[Path]:
    """Digits in [0, 1] (``(N, 8, 8)``) as 8-bit grayscale PNGs, ``digit-<i>-is-<label>-<size>px.png``, each
    pixel ``upscale`` x ``upscale`` times: raw samples for an edge bundle (``examples/digits/processors.yaml``
    turns them back into the models' input; its box filter averages an upscaled digit back exactly)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8).repeat(upscale, 0).repeat(upscale, 1)
        path = folder / f"digit-{index}-is-{int(label)}-{pixels.shape[0]}px.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def save_eval(path: Path, images: np.ndarray[Any, Any], labels: np.ndarray[Any, Any]) -> Path:
    """The held-out split as ``{"image": ..., "labels": ...}``, what ``--eval-data`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=images, labels=labels)
    return path
