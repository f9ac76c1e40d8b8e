"""A Hugging Face BERT classifier served as an application: text in, labels out.

The tokenizer is a WordPiece ``tokenizer.json`` trained here with ``tokenizers``; the model a tiny
``BertForSequenceClassification`` over its vocabulary, exported to ONNX with its three inputs (``input_ids``,
``attention_mask``, ``token_type_ids``, int64, dynamic batch and length). The text step's tensors must be the ones
``transformers`` builds from the same file, and the served answers the model's own in process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

import modelport
from modelport.manifest import read_manifest
from modelport.processing import ProcessingContext, TextStep
from modelport.processing.text import TextProcessor
from modelport.serving.dataplane import DataPlane
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.processing.tokenizer import build_tokenizer

pytestmark = [pytest.mark.torch]

LABELS = ["negative", "neutral", "positive"]
MAX_LENGTH = 10
TEXTS = ["The cat sat on the MAT!", "a bird sang in the tree while the dog chased the cat and the cat ran", "models"]
STEP: dict[str, Any] = {
    "kind": "text",
    "tokenizer": "tokenizer.json",
    "max_length": MAX_LENGTH,
    "token_type_ids": "token_type_ids",
}


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> tuple[Path, Any]:
    """The repository (``bert-onnx`` with the text step, ``untyped-onnx`` without token types) and the model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    work = tmp_path_factory.mktemp("hf-text")
    tokenizer = build_tokenizer(work / "tokenizer.json")
    vocab = len(json.loads(tokenizer.read_text())["model"]["vocab"])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(LABELS),
        initializer_range=0.5,
    )
    model = BertForSequenceClassification(config).eval()
    specs = (f"input_ids:int64:-1x-1:0..{vocab}", "attention_mask:int64:-1x-1:0..2", "token_type_ids:int64:-1x-1:0..2")
    repo = work / "repo"
    for name, step in (("bert", STEP), ("untyped", {**STEP, "token_type_ids": None})):
        report = modelport.export(source=model, repository=repo, name=name, formats=("onnx",), inputs=specs, quiet=True)
        assert [r.status for r in report.rows] == ["pass"], report.rows[0].message
        version = repo / f"{name}-onnx" / "1"
        (version / "tokenizer.json").write_bytes(tokenizer.read_bytes())
        (version / "labels.txt").write_text("\n".join(LABELS) + "\n")
        processors = {"pre": [step], "post": [{"kind": "topk", "k": 3, "activation": "softmax"}]}
        (version.parent / "config.yaml").write_text(yaml.safe_dump({"processors": processors}))
    return repo, model


@pytest.fixture
async def http(bert) -> AsyncIterator[httpx.AsyncClient]:
    plane: DataPlane = build(ServerSettings(repository=bert[0]))
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await plane.close()


def _hf_encoding(repo: Path, texts: list[str], padding: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(repo / "bert-onnx" / "1" / "tokenizer.json"))
    tokenizer.pad_token = "[PAD]"
    return tokenizer(
        texts, padding=padding, truncation=True, max_length=MAX_LENGTH, return_tensors="np", return_token_type_ids=True
    )


def _expected(bert: tuple[Path, Any], texts: list[str]) -> list[dict[str, float]]:
    import torch

    repo, model = bert
    encoding = _hf_encoding(repo, texts, "max_length")
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in encoding.items()}).logits
    rows = torch.softmax(logits, -1).numpy()
    return [{LABELS[i]: float(row[i]) for i in np.argsort(-row)} for row in rows]


def _close(answers: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert [list(a) for a in answers] == [list(e) for e in expected]
    np.testing.assert_allclose([list(a.values()) for a in answers], [list(e.values()) for e in expected], atol=1e-5)


@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_the_text_step_builds_what_transformers_builds(bert, padding):
    """Ids, attention mask and token types, with truncation and padding, in the model's dtype (int64)."""
    repo = bert[0]
    version = repo / "bert-onnx" / "1"
    step = TextStep(**{**STEP, "padding": padding})
    rows = TextProcessor(step, ProcessingContext(version, read_manifest(version)))(TEXTS)
    theirs = _hf_encoding(repo, TEXTS, padding)
    from tokenizers import Tokenizer

    lengths = [len(e.ids) for e in Tokenizer.from_file(str(version / "tokenizer.json")).encode_batch(TEXTS)]
    assert lengths[1] > MAX_LENGTH > lengths[0] > lengths[2]  # one truncated, the others padded
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        mine = np.concatenate([row[name] for row in rows])  # type: ignore[index]
        assert mine.dtype == np.int64, name
        np.testing.assert_array_equal(mine, theirs[name], err_msg=name)


async def test_torchserve_and_v2_bytes_answer_the_model_s_labels(http, bert):
    expected = _expected(bert, TEXTS)
    raw = await http.post("/predictions/bert-onnx", content=TEXTS[0].encode())
    assert raw.status_code == 200, raw.text
    _close([raw.json()], expected[:1])
    listed = await http.post("/predictions/bert-onnx", json=TEXTS)
    assert listed.status_code == 200, listed.text
    _close(listed.json(), expected)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
    v2 = await http.post("/v2/models/bert-onnx/infer", json=body)
    assert v2.status_code == 200, v2.text
    _close([json.loads(row) for row in v2.json()["outputs"][0]["data"]], expected)


async def test_a_text_step_that_misses_a_model_input_fails_the_version_saying_which(http):
    """Without ``token_type_ids`` in the text step the version was READY and every request a 400 (``missing
    ['token_type_ids']``) that no client could fix."""
    metadata = (await http.get("/v2/models/untyped-onnx")).json()
    assert metadata["parameters"]["state"] == "FAILED"
    assert metadata["parameters"]["reason"] == (
        "processors: the model takes input 'token_type_ids', which the text step does not make "
        "(set token_type_ids: token_type_ids in it)"
    )
    assert (await http.get("/v2/models/bert-onnx/ready")).status_code == 200
