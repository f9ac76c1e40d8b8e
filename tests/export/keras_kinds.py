"""The three ways to write a Keras model: ``keras.Sequential``, functional, and a ``keras.Model`` subclass.

Tiny and random (seeded): each exports in seconds. ``FACTORY_FILE`` is a user's ``net.py``
whose factory returns the subclassed model, for the CLI (a ``.keras`` file of a subclassed
model cannot be loaded without its code).
"""

from __future__ import annotations

from typing import Any

FEATURES = 6
CLASSES = 3
INPUT = f"x:float32:-1x{FEATURES}"


def sequential() -> Any:
    """``keras.Sequential`` with an ``Input``: what a new user writes first."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((FEATURES,), name="x"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES, name="probs", activation="softmax"),
        ]
    )


def sequential_without_input() -> Any:
    """A Sequential model never built: it records no input shape."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Dense(16, activation="relu"), keras.layers.Dense(CLASSES)])


def functional() -> Any:
    """The functional API, with named input and output."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((FEATURES,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(CLASSES, name="logits")(h))


def subclassed() -> Any:
    """A ``keras.Model`` subclass: no recorded inputs, so its export needs input specs."""
    import keras

    class Classifier(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.head = keras.layers.Dense(CLASSES)

        def call(self, x: Any) -> Any:
            return self.head(self.hidden(x))

    keras.utils.set_random_seed(0)
    return Classifier()


FACTORY_FILE = """\
import keras


class Classifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.hidden(x))


def make_model():
    keras.utils.set_random_seed(0)
    return Classifier()
"""


def tied_logits() -> Any:
    """A classifier whose logits differ by ~1e-3 on a common 100: full int8 rounds them to a tie.

    TFLite's int8 range always holds 0, so the output scale is ~100/255 and the three logits
    quantize to one value; top-1 agreement with the source falls to about a third.
    """
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((FEATURES,), name="x")
    dense = keras.layers.Dense(
        CLASSES,
        name="logits",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        bias_initializer=keras.initializers.Constant(100.0),
    )
    return keras.Model(x, dense(x))


def dict_outputs() -> Any:
    """Two inputs (float32, int32) and a dict of outputs whose keys are not sorted and differ from the layer
    names ({"scores/probs": softmax "sm", "cls": argmax "cls"}): the outputs take the keys, in this order."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="dense.input-1")
    ids = keras.Input((5,), name="ids_in", dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 3)(ids))
    logits = keras.layers.Dense(CLASSES, name="head")(keras.layers.Concatenate()([x, pooled]))
    cls = keras.layers.Lambda(lambda t: keras.ops.argmax(t, axis=-1), name="cls")(logits)
    return keras.Model([x, ids], {"scores/probs": keras.layers.Softmax(name="sm")(logits), "cls": cls})


def invalid_layer_name() -> Any:
    """A layer name TensorFlow refuses as a scope name: Keras reports it under a header line."""
    import keras

    x = keras.Input((FEATURES,), name="x")
    return keras.Model(x, keras.layers.Dense(CLASSES, name="logits:out")(x))
