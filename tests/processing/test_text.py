"""The text step: tokenization, truncation or refusal, padding, dtypes and bad text."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
from modelport.processing import ProcessingContext, TextStep
from modelport.processing.text import TextProcessor
from tests.processing.tokenizer import build_tokenizer

LONG = "the cat sat on the mat " * 10


@pytest.fixture
def model_dir(tmp_path):
    build_tokenizer(tmp_path / "tokenizer.json")
    return tmp_path


def _run(model_dir, items, manifest=None, **options):
    return TextProcessor(TextStep(**options), ProcessingContext(model_dir, manifest))(items)


def test_ids_match_the_tokenizer_and_pad_to_max_length(model_dir):
    reference = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode("the cat sat").ids
    [out] = _run(model_dir, ["the cat sat"], max_length=12)
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].shape == (1, 12) and out["input_ids"].dtype == np.int64
    assert out["input_ids"][0, : len(reference)].tolist() == reference
    assert out["input_ids"][0, len(reference) :].tolist() == [0] * (12 - len(reference))  # [PAD] is id 0
    assert out["attention_mask"][0].tolist() == [1] * len(reference) + [0] * (12 - len(reference))


def test_padding_to_the_longest_in_the_batch(model_dir):
    short, long = _run(model_dir, ["cat", "the dog chased the cat"], padding="longest")
    assert short["input_ids"].shape == long["input_ids"].shape == (1, 7)  # [CLS] + 5 words + [SEP]
    assert long["attention_mask"].sum() == 7 and short["attention_mask"].sum() == 3


def test_truncation_keeps_the_special_tokens(model_dir):
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    [out] = _run(model_dir, [LONG], max_length=8)
    ids = out["input_ids"][0].tolist()
    assert len(ids) == 8 and out["attention_mask"].sum() == 8
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")


def test_refusal_when_truncation_is_off_fails_only_the_long_item(model_dir):
    ok, refused = _run(model_dir, ["the cat", LONG], max_length=8, truncation=False, padding="longest")
    assert ok["input_ids"].shape == (1, 4)
    assert isinstance(refused, InvalidArgumentError) and "62 tokens, over the limit of 8" in refused.message


def test_token_types_names_and_dtype(model_dir):
    [out] = _run(model_dir, [b"a bird"], input_ids="ids", attention_mask=None, token_type_ids="segments", dtype="int32")
    assert set(out) == {"ids", "segments"}
    assert out["ids"].dtype == np.int32 and out["segments"].tolist() == [[0] * 128]


def test_dtype_defaults_to_the_manifest(model_dir):
    manifest = ModelManifest(
        name="m",
        version=1,
        family="f",
        variant="onnx",
        format="onnx",
        artifact="model.onnx",
        inputs=(
            TensorSpec(name="input_ids", dtype="int32", shape=(-1, -1)),
            TensorSpec(name="attention_mask", dtype="int64", shape=(-1, -1)),
        ),
        outputs=(TensorSpec(name="logits", dtype="float32", shape=(-1, 2)),),
        source=SourceInfo(framework="torch", kind="module", location="x"),
    )
    [out] = _run(model_dir, ["cat"], manifest=manifest, max_length=4)
    assert out["input_ids"].dtype == np.int32 and out["attention_mask"].dtype == np.int64


def test_explicit_pad_id(model_dir):
    [out] = _run(model_dir, ["cat"], max_length=5, pad_id=3)
    assert out["input_ids"][0, 3:].tolist() == [3, 3]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (b"caf\xe9", "not valid UTF-8 \\(at byte 3\\)"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("\ud800 lone surrogate", "not valid Unicode"),
        (12, "expected text, got int"),
    ],
)
def test_bad_text_is_a_client_error_and_fails_alone(model_dir, item, message):
    good, bad = _run(model_dir, ["the cat", item])
    assert isinstance(good, dict)
    assert isinstance(bad, InvalidArgumentError)
    assert "'input_ids'" in bad.message
    with pytest.raises(InvalidArgumentError, match=message):
        raise bad


def test_a_batch_of_only_bad_items(model_dir):
    assert all(isinstance(r, InvalidArgumentError) for r in _run(model_dir, [b"\xff", 1], padding="longest"))


def test_missing_or_malformed_tokenizer_file(tmp_path):
    with pytest.raises(NotFoundError, match="no tokenizer file"):
        TextProcessor(TextStep(), ProcessingContext(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InvalidArgumentError, match=r"not a tokenizers tokenizer\.json"):
        TextProcessor(TextStep(), ProcessingContext(tmp_path))
