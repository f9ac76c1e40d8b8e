"""The same small CNN in Keras (NHWC input), trained on the same split."""

from __future__ import annotations

from typing import Any

import numpy as np


def build() -> Any:
    """A functional Keras model with a named ``image`` input and ``logits`` output."""
    import keras

    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(image, logits, name="digits_cnn")


def train(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], epochs: int = 40, seed: int = 0) -> Any:
    """Train on (N, 8, 8, 1) images; a few seconds on a CPU."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model
