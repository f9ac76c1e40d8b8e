"""Custom ``module:callable`` processors loaded from the model's directory."""

from __future__ import annotations

import sys

import pytest

from modelport.errors import InferenceError, InvalidArgumentError, NotFoundError, SourceError
from modelport.processing import CustomStep, ProcessingContext
from modelport.processing.custom import CustomProcessor

CODE = """
from modelport.errors import InvalidArgumentError

def upper(batch):
    return [item.upper() for item in batch]

def picky(batch):
    return [InvalidArgumentError("no x") if item == "x" else item for item in batch]

def refuse(batch):
    raise InvalidArgumentError("the whole batch is wrong")

def short(batch):
    return batch[:-1]

def scalar(batch):
    return 3

def crash(batch):
    raise RuntimeError("bug")

NOT_CALLABLE = 1
"""


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "handlers.py").write_text(CODE)
    (tmp_path / "broken.py").write_text("raise ImportError('missing dependency')\n")
    return tmp_path


def _custom(model_dir, reference):
    return CustomProcessor(CustomStep(callable=reference), ProcessingContext(model_dir))


def test_batch_in_batch_out(model_dir):
    assert _custom(model_dir, "handlers:upper")(["a", "b"]) == ["A", "B"]


def test_loading_does_not_touch_sys_path_or_module_names(model_dir):
    before = list(sys.path)
    _custom(model_dir, "handlers:upper")
    assert sys.path == before and "handlers" not in sys.modules


def test_item_errors_and_batch_errors(model_dir):
    ok, bad = _custom(model_dir, "handlers:picky")(["a", "x"])
    assert ok == "a" and isinstance(bad, InvalidArgumentError)
    assert [type(r) for r in _custom(model_dir, "handlers:refuse")(["a", "b"])] == [InvalidArgumentError] * 2


def test_wrong_results_are_server_errors(model_dir):
    with pytest.raises(InferenceError, match="returned int, not a list"):
        _custom(model_dir, "handlers:scalar")(["a"])
    with pytest.raises(RuntimeError, match="bug"):  # a bug in model code propagates (the server answers 500)
        _custom(model_dir, "handlers:crash")(["a"])


@pytest.mark.parametrize(
    ("reference", "error", "message"),
    [
        ("missing:f", NotFoundError, "no .*missing.py"),
        ("handlers:nothing", SourceError, "has no callable 'nothing'"),
        ("handlers:NOT_CALLABLE", SourceError, "has no callable"),
        ("broken:f", SourceError, "ImportError: missing dependency"),
    ],
)
def test_load_errors(model_dir, reference, error, message):
    with pytest.raises(error, match=message):
        _custom(model_dir, reference)
