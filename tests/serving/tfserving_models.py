"""TF Serving's own example SavedModels, built as its repository builds them (no downloads).

- ``half_plus_two``: ``tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py``: a graph
  that parses serialized tf.Example protos (features ``x`` and ``x2``), with its ``serving_default`` predict
  signature (``x`` -> ``y``), the regression signatures ``regress_x_to_y``, ``regress_x_to_y2``,
  ``regress_x2_to_y3`` and the classification signature ``classify_x_to_y`` (the assets and MLMD extras left out).
- ``mnist``: ``tensorflow_serving/example/mnist_saved_model.py``'s export: ``predict_images`` (``images`` ->
  ``scores``) and a ``serving_default`` classification signature over tf.Example (``classes``, ``scores``), with
  random weights instead of its training on the MNIST download.
- ``resnet``: the shape of the official ResNet SavedModel ``resnet_client.py`` / ``resnet_client_grpc.py`` call:
  ``serving_default`` and ``predict`` take ``image_bytes`` (JPEG strings, decoded in the graph) and answer
  ``classes`` and ``probabilities`` (1001 classes); a tiny network of random weights on 32x32 images.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["half_plus_two", "jpeg", "mnist", "resnet"]


def _v1() -> Any:
    import tensorflow as tf

    return tf.compat.v1


def _signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
    v1 = _v1()
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
    )


def _save(export_dir: Path, session: Any, signatures: dict[str, Any], init: Any = None) -> Path:
    v1 = _v1()
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    builder.add_meta_graph_and_variables(
        session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures, main_op=init
    )
    builder.save()
    return export_dir


def half_plus_two(export_dir: Path) -> Path:
    """y = 0.5 x + 2, y2 = 0.5 x + 3, y3 = 0.5 x2 + 3, as ``saved_model_half_plus_two.py`` exports it (CPU)."""
    v1 = _v1()
    constants = v1.saved_model.signature_constants
    with v1.Session(graph=v1.Graph()) as sess:
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b"), v1.Variable(3.0, name="c")
        serialized_tf_example = v1.placeholder(v1.string, name="tf_example", shape=[None])
        feature_configs = {
            "x": v1.FixedLenFeature([1], dtype=v1.float32),
            "x2": v1.FixedLenFeature([1], dtype=v1.float32, default_value=[0.0]),
        }
        tf_example = v1.parse_example(serialized_tf_example, feature_configs)
        x = v1.identity(tf_example["x"], name="x")
        y = v1.identity(v1.add(v1.multiply(a, x), b), name="y")
        y2 = v1.identity(v1.add(v1.multiply(a, x), c), name="y2")
        x2 = v1.identity(tf_example["x2"], name="x2")
        a2, c2 = v1.Variable(0.5, name="a2"), v1.Variable(3.0, name="c2")
        y3 = v1.identity(v1.add(v1.multiply(a2, x2), c2), name="y3")
        regress, classify = constants.REGRESS_METHOD_NAME, constants.CLASSIFY_METHOD_NAME
        signatures = {
            "regress_x_to_y": _signature({"inputs": serialized_tf_example}, {"outputs": y}, regress),
            "regress_x_to_y2": _signature({"inputs": serialized_tf_example}, {"outputs": y2}, regress),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": _signature({"inputs": serialized_tf_example}, {"scores": y}, classify),
            "serving_default": _signature({"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME),
        }
        sess.run(v1.global_variables_initializer())
        return _save(export_dir, sess, signatures)


def mnist(export_dir: Path, seed: int = 0) -> Path:
    """``mnist_saved_model.py``'s softmax regression and signatures, with random weights (no training data)."""
    v1 = _v1()
    constants = v1.saved_model.signature_constants
    rng = np.random.default_rng(seed)
    with v1.Session(graph=v1.Graph()) as sess:
        serialized_tf_example = v1.placeholder(v1.string, name="tf_example")
        feature_configs = {"x": v1.FixedLenFeature(shape=[784], dtype=v1.float32)}
        tf_example = v1.parse_example(serialized_tf_example, feature_configs)
        x = v1.identity(tf_example["x"], name="x")
        w = v1.Variable(rng.normal(0, 0.1, (784, 10)).astype(np.float32))
        b = v1.Variable(rng.normal(0, 0.1, (10,)).astype(np.float32))
        sess.run(v1.global_variables_initializer())
        y = v1.nn.softmax(v1.matmul(x, w) + b, name="y")
        values, indices = v1.nn.top_k(y, 10)
        table = v1.lookup.StaticHashTable(
            v1.lookup.KeyValueTensorInitializer(
                v1.constant(list(range(10)), dtype=v1.int64), v1.constant([str(i) for i in range(10)])
            ),
            default_value="UNK",
        )
        prediction_classes = table.lookup(v1.cast(indices, v1.int64))
        classification = _signature(
            {constants.CLASSIFY_INPUTS: serialized_tf_example},
            {constants.CLASSIFY_OUTPUT_CLASSES: prediction_classes, constants.CLASSIFY_OUTPUT_SCORES: values},
            constants.CLASSIFY_METHOD_NAME,
        )
        prediction = _signature({"images": x}, {"scores": y}, constants.PREDICT_METHOD_NAME)
        init = v1.group(v1.tables_initializer(), name="legacy_init_op")
        signatures = {"predict_images": prediction, constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classification}
        return _save(export_dir, sess, signatures, init)


def resnet(export_dir: Path, classes: int = 1001, seed: int = 0) -> Path:
    """A ResNet-shaped SavedModel whose signatures take JPEG bytes (``image_bytes``), decoded in the graph."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    kernel = tf.Variable(rng.normal(0, 0.2, (3, 3, 3, 8)).astype(np.float32))
    dense = tf.Variable(rng.normal(0, 0.2, (8, classes)).astype(np.float32))

    def decode(data: Any) -> Any:
        image = tf.image.decode_jpeg(data, channels=3)
        return tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), (32, 32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes: Any) -> dict[str, Any]:
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.float32)
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")), axis=(1, 2))
        probabilities = tf.nn.softmax(tf.matmul(features, dense))
        return {"classes": tf.argmax(probabilities, axis=1), "probabilities": probabilities}

    module = tf.Module()
    module.kernel, module.dense, module.serve = kernel, dense, serve
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": serve, "predict": serve})
    return export_dir


def jpeg(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    """A small random RGB JPEG image."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()
