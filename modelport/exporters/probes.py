"""What a source's answers to more inputs say about how it may be served: probes run beside the golden cases.

- output dims whose size the input's values choose (a detector's boxes above a score threshold): the same input
  shapes drawn again answer other sizes there, and the manifest declares them dynamic;
- rows of a batch that do not answer alone as they do in it (an ``EmbeddingBag``'s flat ids and offsets): the
  server, which batches requests and splits the outputs by rows, must run such a model one request a call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelport.errors import ModelportError
from modelport.exporters.source_model import SourceModel
from modelport.golden import GoldenCase, random_inputs, take_rows

__all__ = ["data_dependent_dims", "rows_independent"]

PROBES = 3  # inputs drawn again at the first golden case's shapes to find data-dependent output dims


def rows_independent(source: SourceModel, case: GoldenCase) -> bool:
    """Whether the first row of a golden batch answers alone as it does in the batch. The server batches requests
    and splits the outputs by rows, which is right only for a model whose rows do not meet: inputs whose first dims
    are no batch (an ``EmbeddingBag``'s flat ids and the offsets into them) or statistics over the batch answer
    otherwise, and such a model is served one request a call. Float outputs may differ by a batch's rounding."""
    if case.batch_size < 2:
        return True
    try:
        alone = source.predict(take_rows(case.inputs, 0, 1))
    except ModelportError:  # a model that refuses a row alone (say offsets past its one id) takes no batch either
        return False
    for name, value in case.outputs.items():
        if value.ndim == 0 or value.shape[0] != case.batch_size:
            continue
        if not _same_rows(np.asarray(value[:1]), np.asarray(alone.get(name))):
            return False
    return True


def _same_rows(batched: np.ndarray[Any, Any], alone: np.ndarray[Any, Any]) -> bool:
    if batched.shape != alone.shape:
        return False
    if batched.dtype.kind in "fc":
        return bool(np.allclose(alone, batched, rtol=1e-2, atol=1e-3, equal_nan=True))
    return bool(np.array_equal(alone, batched))


def data_dependent_dims(
    source: SourceModel, first: GoldenCase, rows: int, size: int, rng: np.random.Generator
) -> frozenset[tuple[str, int]]:
    """The output dims whose size the input's values choose, not its shape (the boxes a detector keeps above a score
    threshold, ``torch.nonzero``, a boolean mask): inputs drawn again at the first golden case's shapes answer other
    sizes there. The golden cases alone would record the one size they happened to answer (a model of static
    inputs has a single case), and the manifest would declare it."""
    varying: set[tuple[str, int]] = set()
    for _ in range(PROBES):
        inputs = random_inputs(source.inputs, rows, size, rng, source.vocabulary, source.string_samples)
        try:
            outputs = source.predict(inputs)
        except ModelportError:  # values the source refuses: the golden cases are what the export stands on
            continue
        for name, value in outputs.items():
            seen = first.outputs[name].shape if name in first.outputs else value.shape
            if len(seen) == value.ndim:
                varying.update((name, i) for i, (a, b) in enumerate(zip(value.shape, seen, strict=True)) if a != b)
    return frozenset(varying)
