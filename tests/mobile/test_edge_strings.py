"""A model with a string input (Keras ``StringLookup``) in an edge bundle.

Its golden inputs are strings: ``modelport bundle`` crashed writing them into bundle.json ("TypeError: Object of
type bytes is not JSON serializable"), and the edge runtime refused every string input. They are stored as base64
under the dtype ``string``, and ``predict`` takes str or bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.mobile import modelport_edge as edge
from modelport.mobile.builder import build_bundle
from modelport.mobile.options import BundleOptions

pytestmark = [pytest.mark.tflite, pytest.mark.tf]


def _words_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    words = keras.Input((3,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish"])(words)
    vectors = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(ids))
    return keras.Model(words, keras.layers.Dense(2, name="score")(vectors))


def test_a_string_input_model_bundles_verifies_and_predicts_from_strings(tmp_path):
    model = _words_model()
    report = modelport.export(source=model, repository=tmp_path / "repo", name="words", formats=("tflite",), quiet=True)
    assert [r.status for r in report.rows] == ["pass"], report.rows
    build_bundle(BundleOptions(target=tmp_path / "repo" / "words", out=tmp_path / "bundle", quiet=True))

    stored = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    golden = stored["variants"]["float32"]["golden"][0]["inputs"]["words"]
    assert golden["dtype"] == "string" and len(golden["data"]) == 3 * golden["shape"][0]
    assert edge.decode_array(golden).dtype == object

    opened = edge.EdgeModel.open(tmp_path / "bundle")  # checksums and golden outputs on this device
    rows = [["cat", "dog", "zebra"], ["fish", "", "cat"]]
    expected = np.asarray(model(np.array(rows), training=False))
    np.testing.assert_allclose(opened.predict({"words": np.array(rows)})["score"], expected, rtol=1e-5, atol=1e-6)
    as_bytes = np.array([[w.encode() for w in row] for row in rows], dtype=object)
    np.testing.assert_allclose(opened.predict({"words": as_bytes})["score"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(edge.EdgeInputError, match="input 'words' has dtype float32, expected strings"):
        opened.predict({"words": np.zeros((1, 3), np.float32)})


def test_string_arrays_round_trip_through_the_bundle_encoding():
    value = np.array([[b"a\xff", b""], [b"caf\xc3\xa9", b"x"]], dtype=object)
    encoded = edge.encode_array(value)
    assert json.loads(json.dumps(encoded)) == encoded
    decoded = edge.decode_array(encoded)
    assert decoded.shape == (2, 2) and decoded.tolist() == value.tolist()
