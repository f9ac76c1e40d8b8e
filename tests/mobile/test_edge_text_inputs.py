"""Text steps against the inputs a TFLite text model takes: their dtypes and their pinned sequence length.

A model whose inputs differ in dtype (int32 ids, an int64 mask) bundles and answers as the server does: the server's
text step makes each tensor in its model input's dtype; the bundle recorded the ids' dtype as the step's and the device
made every tensor int32 (LiteRT's 'Got value of type INT32 but expected type INT64' traceback). A text step whose width
is not the model's pinned length is refused when the bundle is built, saying what to set, samples or not (without
samples the bundle was built and every text failed on the device).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

import modelport
from modelport.errors import InvalidArgumentError, ModelportError
from modelport.mobile import BundleOptions, build_bundle
from modelport.mobile import modelport_edge as edge
from modelport.processing import ProcessingContext, TextStep
from modelport.processing.text import TextProcessor
from tests.mobile.text_model import MAX_LENGTH, SENTENCES, VOCAB, bag
from tests.processing.tokenizer import build_tokenizer
from tests.serving.inprocess import served_in_process

INPUTS = [f"input_ids:int32:-1x-1:0..{VOCAB}", "attention_mask:int64:-1x-1:0..2"]
DTYPES = {"input_ids": "int32", "attention_mask": "int64"}


def test_each_tensor_takes_its_inputs_dtype_as_on_the_server(tmp_path):
    build_tokenizer(tmp_path / "tokenizer.json")
    step = TextStep(max_length=MAX_LENGTH)
    tokenizer = edge.load_tokenizer(tmp_path / "tokenizer.json", {**step.model_dump(mode="json"), "pad_id": 0})
    server = TextProcessor(step, ProcessingContext(tmp_path, None))
    for text in SENTENCES:
        device = edge.preprocess_text(text, {**step.model_dump(mode="json"), "pad_id": 0}, tokenizer, DTYPES)
        [expected] = server([text])
        assert {k: v.dtype.name for k, v in device.items()} == DTYPES
        assert {k: v.tolist() for k, v in device.items()} == {k: v.tolist() for k, v in expected.items()}
    forced = {**step.model_dump(mode="json"), "pad_id": 0, "dtype": "int32"}  # the step's dtype wins
    assert {v.dtype.name for v in edge.preprocess_text("a cat", forced, tokenizer, DTYPES).values()} == {"int32"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """tests.mobile.text_model's bag with int32 ids and an int64 mask in TFLite, served with its text step."""
    root = tmp_path_factory.mktemp("mixed")
    model = bag()
    model.input_specs = tuple(INPUTS)  # the bag's own are both int64
    report = modelport.export(
        source=model,
        repository=root / "repo",
        name="mixed",
        formats=("tflite",),
        tflite_shapes={"input_ids": (1, MAX_LENGTH), "attention_mask": (1, MAX_LENGTH)},
        quiet=True,
    )
    [row] = report.rows
    assert row.status == "pass", row
    build_tokenizer(Path(row.path) / "tokenizer.json")
    steps = {"pre": [{"kind": "text", "max_length": MAX_LENGTH}], "post": [{"kind": "topk", "k": 2}]}
    (root / "repo" / "mixed-tflite" / "config.yaml").write_text(yaml.safe_dump({"processors": steps}))
    samples = []
    for index, text in enumerate(SENTENCES):
        samples.append(root / f"sentence-{index}.txt")
        samples[-1].write_text(text, encoding="utf-8")
    build_bundle(BundleOptions(root / "repo" / "mixed", root / "bundle", samples=tuple(samples), quiet=True))
    return root / "repo", root / "bundle", samples


@pytest.fixture
async def http(mixed) -> AsyncIterator[httpx.AsyncClient]:
    async with served_in_process(mixed[0], max_queue_delay_ms=2) as client:
        yield client


@pytest.mark.tflite
@pytest.mark.torch
async def test_a_model_with_int32_ids_and_an_int64_mask_answers_as_the_server(mixed, http):
    _, bundle, samples = mixed
    model = edge.EdgeModel.open(bundle)  # checks the raw text samples on the device
    assert {k: v.dtype.name for k, v in model.preprocess_text("the cat").items()} == DTYPES
    for sample in samples:
        served = await http.post("/predictions/mixed-tflite", content=sample.read_bytes())
        assert served.status_code == 200, served.text
        device = model.classify_text(sample.read_bytes())  # the bundle's top-k, the server's answer
        assert isinstance(device, dict)
        assert list(device) == list(served.json())
        assert np.allclose(list(device.values()), list(served.json().values()), atol=1e-6)


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.parametrize("step", [{"max_length": 32}, {"max_length": MAX_LENGTH, "padding": "longest"}])
def test_a_width_the_model_cannot_take_is_refused_when_bundling(mixed, tmp_path, step):
    repo, _, samples = mixed
    processors = tmp_path / "processors.yaml"
    processors.write_text(yaml.safe_dump({"pre": [{"kind": "text", **step}], "post": [{"kind": "topk"}]}))
    for given in ((), (samples[0],)):
        options = BundleOptions(repo / "mixed", tmp_path / "bundle", processors=processors, samples=given, quiet=True)
        with pytest.raises(
            InvalidArgumentError, match=r"the processors make input 'input_ids' of shape 1x\d+, but"
        ) as e:
            build_bundle(options)
        assert f"set the text step's max_length: {MAX_LENGTH} and padding: max_length" in str(e.value)
        assert not (tmp_path / "bundle").exists()


@pytest.mark.tflite
@pytest.mark.torch
def test_a_text_step_making_a_tensor_the_model_does_not_take_is_refused_as_the_server_refuses_it(mixed, tmp_path):
    """The server fails such a version at load; the bundle was built and LiteRT refused every text on the device."""
    repo, _, samples = mixed
    processors = tmp_path / "processors.yaml"
    step = {"kind": "text", "max_length": MAX_LENGTH, "token_type_ids": "token_type_ids"}
    processors.write_text(yaml.safe_dump({"pre": [step], "post": [{"kind": "topk"}]}))
    for given in ((), (samples[0],)):
        options = BundleOptions(repo / "mixed", tmp_path / "bundle", processors=processors, samples=given, quiet=True)
        with pytest.raises(
            ModelportError, match="the text step makes token_type_ids as 'token_type_ids', which the model does not"
        ):
            build_bundle(options)
