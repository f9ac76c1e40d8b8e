"""Built processors: chains, per-item failures, and what importing modelport loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from modelport.errors import InferenceError, InvalidArgumentError
from modelport.processing import (
    CustomStep,
    IdentityStep,
    ImageStep,
    ProcessingContext,
    ProcessingSpec,
    TopKStep,
    build_processors,
)
from modelport.processing.base import map_items, run_steps
from tests.processing.images import encode, photo

STEPS = """
import numpy as np

def tag(batch):
    return [{**item, "extra": np.ones((1, 1))} for item in batch]

def not_tensors(batch):
    return ["text" for _ in batch]
"""


def test_preprocess_chain_keeps_failed_items_out_of_later_steps(tmp_path):
    (tmp_path / "steps.py").write_text(STEPS)
    spec = ProcessingSpec(pre=(ImageStep(resize=4, center_crop=4), CustomStep(callable="steps:tag")))
    processors = build_processors(spec, ProcessingContext(tmp_path))
    good, bad = processors.preprocess([encode(photo(9, 7)), b"junk"])
    assert set(good) == {"input", "extra"} and good["input"].shape == (1, 3, 4, 4)
    assert isinstance(bad, InvalidArgumentError)


def test_preprocess_checks_that_steps_produce_tensors(tmp_path):
    (tmp_path / "steps.py").write_text(STEPS)
    processors = build_processors(
        ProcessingSpec(pre=(CustomStep(callable="steps:not_tensors"),)), ProcessingContext(tmp_path)
    )
    [result] = processors.preprocess([b"x"])
    assert isinstance(result, InferenceError)


def test_postprocess(tmp_path):
    spec = ProcessingSpec(post=(TopKStep(output="y", k=1),))
    processors = build_processors(spec, ProcessingContext(tmp_path))
    assert processors.postprocess([{"y": np.array([[0.2, 0.8]])}]) == [{"1": 0.8}]
    assert build_processors(ProcessingSpec(post=(IdentityStep(),)), ProcessingContext(tmp_path)).postprocess(
        [{"y": np.array([[1]])}]
    ) == [{"y": [1]}]


def test_empty_spec_passes_tensors_through(tmp_path):
    processors = build_processors(ProcessingSpec(), ProcessingContext(tmp_path))
    tensors = {"x": np.zeros((1, 2))}
    assert processors.preprocess([tensors]) == [tensors]
    assert processors.postprocess(["anything"]) == ["anything"]


def test_run_steps_rejects_a_step_that_changes_the_batch_length():
    with pytest.raises(InferenceError, match="returned 1 items for a batch of 2"):
        run_steps([lambda items: items[:1]], [1, 2])


def test_map_items_turns_modelport_errors_into_results_only():
    def check(item):
        if item == "bad":
            raise InvalidArgumentError("bad item")
        return item

    ok, bad = map_items(check, ["ok", "bad"])
    assert ok == "ok" and isinstance(bad, InvalidArgumentError)
    with pytest.raises(ZeroDivisionError):
        map_items(lambda item: 1 / 0, [1])


def test_import_modelport_loads_neither_pillow_nor_tokenizers():
    code = (
        "import sys, modelport, modelport.processing, modelport.serving.settings; "
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('PIL', 'tokenizers')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert loaded == ""
