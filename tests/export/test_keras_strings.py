"""Keras models over strings (``StringLookup``, ``TextVectorization``), exported as a user would.

Golden string inputs were ``s0``..``s99``: all out of the model's vocabulary, so every golden row got the same
answer and the parity gate, the server's load check and the edge bundle's verify could not tell a model that
ignores its input from the source. They are now drawn mostly from the model's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.golden import load_golden

pytestmark = [pytest.mark.tf]


def _lookup() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    words = keras.Input((3,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish", "bird"])(words)
    vectors = keras.layers.Flatten()(keras.layers.Embedding(5, 4)(ids))
    return keras.Model(words, keras.layers.Dense(2, name="score")(vectors))


def _sentences() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    sentence = keras.Input((1,), dtype="string", name="sentence")
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(np.array([["the cat sat"], ["a dog ran"]]))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(vectorize(sentence)))
    inner = keras.Model(sentence, pooled)  # nested: its layers are found too
    outer = keras.Input((1,), dtype="string", name="sentence")
    return keras.Model(outer, keras.layers.Dense(2, name="score")(inner(outer)))


@pytest.mark.parametrize(
    ("build", "name", "vocabulary"),
    [
        (_lookup, "words", {"cat", "dog", "fish", "bird"}),
        (_sentences, "sentence", {"the", "cat", "sat", "a", "dog", "ran"}),
    ],
)
def test_golden_strings_are_drawn_from_the_models_vocabulary(tmp_path, build, name, vocabulary):
    report = modelport.export(source=build(), repository=tmp_path, name="s", formats=("savedmodel",), quiet=True)
    (row,) = report.rows
    assert row.status == "pass", row.message
    cases = load_golden(Path(row.path) / "golden.npz")
    drawn = [w.decode() for case in cases for w in case.inputs[name].ravel()]
    assert sum(w in vocabulary for w in drawn) > len(drawn) // 2, drawn
    rows = np.concatenate([case.outputs["score"] for case in cases])
    assert len({tuple(r) for r in rows.round(6).tolist()}) > 1, rows  # the rows' answers tell them apart
