"""Hugging Face ``transformers`` models, as a user brings them: tiny configs with random weights.

Their ``forward`` takes many optional parameters (``BertModel(input_ids, attention_mask, token_type_ids, ...)``,
``GPT2LMHeadModel(input_ids, cache, attention_mask, ...)``): inputs named after them are passed by keyword,
whatever subset and order the export names. Their attention masks are drawn as a tokenizer pads (a row of
zeros masks every token, and the ONNX export answers it differently from PyTorch: no parity question).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.errors import SpecError
from modelport.golden import random_inputs
from modelport.manifest import TensorSpec, read_manifest
from modelport.runtimes import open_runtime
from tests.user_cli import run_modelport

pytestmark = [pytest.mark.torch]

ROOT = Path(__file__).resolve().parents[2]

VOCAB = 100


def _bert() -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        initializer_range=0.5,
    )
    return BertForSequenceClassification(config).eval()


def _gpt2() -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=64, use_cache=False, initializer_range=0.5
    )
    return GPT2LMHeadModel(config).eval()


def _ids(batch: int, seq: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, VOCAB, (batch, seq))


def _padded(batch: int, seq: int) -> np.ndarray:
    lengths = np.arange(batch) % seq + 1
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


def _hf(model: Any, **inputs: np.ndarray) -> Any:
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()})


def _served(row: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    directory = Path(row.path)
    runtime = open_runtime(directory, read_manifest(directory))
    try:
        return runtime.predict(inputs)
    finally:
        runtime.unload()


def test_inputs_named_after_forward_parameters_reach_those_parameters(tmp_path):
    """BERT given ``input_ids`` and ``token_type_ids`` (no mask): the token types were passed positionally as
    the attention mask, and every format published a model that answered as if they were one."""
    model = _bert()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="bert",
        formats=("onnx", "torchscript", "pt2"),
        inputs=(f"input_ids:int64:-1x-1:0..{VOCAB}", "token_type_ids:int64:-1x-1:0..2"),
        quiet=True,
    )
    assert [(r.variant, r.status) for r in report.rows] == [("onnx", "pass"), ("torchscript", "pass"), ("pt2", "pass")]
    rng = np.random.default_rng(1)
    ids, types = _ids(4, 11, rng), rng.integers(0, 2, (4, 11))
    expected = _hf(model, input_ids=ids, token_type_ids=types).logits.numpy()
    as_mask = _hf(model, input_ids=ids, attention_mask=types).logits.numpy()
    assert np.abs(expected - as_mask).max() > 1e-3  # the test tells the two readings apart
    for row in report.rows:
        logits = _served(row, {"input_ids": ids, "token_type_ids": types})["logits"]
        np.testing.assert_allclose(logits, expected, atol=1e-4, err_msg=row.variant)


def test_gpt2_with_an_attention_mask_exports_and_answers_logits_per_token(tmp_path):
    """``GPT2LMHeadModel.forward(input_ids, cache, attention_mask, ...)``: the mask was passed as ``cache``
    and the source failed ("'Tensor' object has no attribute 'get_seq_length'")."""
    model = _gpt2()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="gpt2",
        formats=("onnx", "pt2"),
        inputs=(f"input_ids:int64:-1x-1:0..{VOCAB}", "attention_mask:int64:-1x-1:0..2"),
        quiet=True,
    )
    assert [(r.variant, r.status) for r in report.rows] == [("onnx", "pass"), ("pt2", "pass")], report.rows
    manifest = read_manifest(Path(report.rows[0].path))
    assert [(o.name, o.shape) for o in manifest.outputs] == [("logits", (-1, -1, VOCAB))]
    ids, mask = _ids(2, 13, np.random.default_rng(2)), _padded(2, 13)
    expected = _hf(model, input_ids=ids, attention_mask=mask).logits.numpy()
    for row in report.rows:
        np.testing.assert_allclose(
            _served(row, {"input_ids": ids, "attention_mask": mask})["logits"], expected, atol=1e-4, err_msg=row.variant
        )


def test_an_input_in_the_place_of_another_parameter_is_refused_with_the_fix():
    """``ids`` is no parameter of GPT-2's forward, so the inputs go positionally, and ``attention_mask``
    would land on ``cache``: refused, naming both and what to do."""
    with pytest.raises(SpecError) as caught:
        modelport.export(
            source=_gpt2(),
            repository=Path("unused"),
            name="gpt2",
            formats=("onnx",),
            inputs=(f"ids:int64:-1x-1:0..{VOCAB}", "attention_mask:int64:-1x-1:0..2"),
            quiet=True,
        )
    message = str(caught.value)
    assert "input 'attention_mask' would be passed as forward's parameter 'cache'" in message
    assert "name every input after a parameter of forward (input_ids, cache, attention_mask" in message


def test_a_module_without_input_specs_is_told_what_its_forward_takes():
    with pytest.raises(SpecError) as caught:
        modelport.export(source=_bert(), repository=Path("unused"), name="bert", formats=("onnx",), quiet=True)
    assert "pass --input NAME:DTYPE:SHAPE" in str(caught.value)
    assert "its forward takes input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, labels:" in (
        str(caught.value)
    )


def test_bert_onnx_parity_with_its_attention_mask(tmp_path):
    """BERT's ONNX export answers a fully masked row unlike PyTorch does: golden masks with such rows failed
    its parity gate (max abs error 2e-4 on the default seed), though it reproduces every real mask."""
    model = _bert()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="bert",
        formats=("onnx",),
        inputs=(
            f"input_ids:int64:-1x-1:0..{VOCAB}",
            "attention_mask:int64:-1x-1:0..2",
            "token_type_ids:int64:-1x-1:0..2",
        ),
        quiet=True,
    )
    assert [(r.variant, r.status) for r in report.rows] == [("onnx", "pass")], report.rows[0].message
    ids, mask, types = _ids(3, 6, np.random.default_rng(3)), _padded(3, 6), np.zeros((3, 6), np.int64)
    expected = _hf(model, input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    answer = _served(report.rows[0], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    np.testing.assert_allclose(answer["logits"], expected, atol=1e-4)


@pytest.mark.tflite
def test_bert_tflite_at_a_chosen_length_pins_its_mask_and_token_types_alike(tmp_path):
    model = _bert()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="bert",
        formats=("tflite",),
        inputs=(
            f"input_ids:int64:-1x-1:0..{VOCAB}",
            "attention_mask:int64:-1x-1:0..2",
            "token_type_ids:int64:-1x-1:0..2",
        ),
        tflite_shapes={"input_ids": (2, 16)},
        quiet=True,
    )
    assert report.rows[0].status == "pass", report.rows[0].message
    manifest = read_manifest(Path(report.rows[0].path))
    assert [s.shape for s in manifest.inputs] == [(2, 16)] * 3
    ids, mask, types = _ids(2, 16, np.random.default_rng(5)), _padded(2, 16), np.ones((2, 16), np.int64)
    expected = _hf(model, input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    answer = _served(report.rows[0], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    np.testing.assert_allclose(answer["logits"], expected, atol=1e-4)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "float32"])
def test_golden_attention_masks_are_padding_masks(dtype):
    spec = TensorSpec(name="attention_mask", dtype=dtype, shape=(-1, -1))
    mask = random_inputs((spec,), 64, 7, np.random.default_rng(0))["attention_mask"]
    assert mask.shape == (64, 7) and mask.dtype == np.dtype(dtype)
    values = mask.astype(np.int64)
    assert set(np.unique(values)) == {0, 1}
    assert (values[:, 0] == 1).all()  # every row attends to its first token
    assert (np.diff(values, axis=1) <= 0).all()  # ones, then padding
    assert len({int(v) for v in values.sum(1)}) > 3  # of varied lengths


def test_other_integer_inputs_keep_their_range():
    spec = TensorSpec(name="mask", dtype="int64", shape=(-1, 6), value_range=(0.0, 2.0))
    values = random_inputs((spec,), 200, 6, np.random.default_rng(0))["mask"]
    assert (values[:, 0] == 0).any()  # a plain 0..2 input is not a padding mask


_LOAD_WITHOUT_TRANSFORMERS = """
import sys
from pathlib import Path
import numpy as np
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime
from tests.user_cli import run_modelport
directory = Path(sys.argv[1])
runtime = open_runtime(directory, read_manifest(directory))
inputs = dict(np.load(sys.argv[2]))
np.save(sys.argv[3], runtime.predict(inputs)["logits"])
assert "transformers" not in sys.modules
"""


def test_a_pt2_program_of_a_model_output_loads_where_transformers_is_not_imported(tmp_path):
    """The program recorded ``SequenceClassifierOutput`` as its output type, and a server, which never imports
    ``transformers``, could not load it ("... SequenceClassifierOutput in pytree is not registered")."""
    model = _bert()
    inputs = (f"input_ids:int64:-1x-1:0..{VOCAB}", "attention_mask:int64:-1x-1:0..2")
    report = modelport.export(
        source=model, repository=tmp_path / "repo", name="bert", formats=("pt2",), inputs=inputs, quiet=True
    )
    assert report.rows[0].status == "pass", report.rows[0].message
    ids, mask = _ids(2, 9, np.random.default_rng(4)), _padded(2, 9)
    np.savez(tmp_path / "inputs.npz", input_ids=ids, attention_mask=mask)
    subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_WITHOUT_TRANSFORMERS,
            report.rows[0].path,
            tmp_path / "inputs.npz",
            tmp_path / "out.npy",
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    expected = _hf(model, input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-4)


_AUDIO_SOURCE = """
import torch


class Frames(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, kernel_size=16, stride=4)

    def forward(self, input_values):
        return self.conv(input_values.unsqueeze(1)).mean(-1)


def make():
    torch.manual_seed(0)
    return Frames().eval()
"""


def test_dynamic_sizes_flag_draws_golden_inputs_long_enough_for_the_model(tmp_path):
    """A model that needs at least 16 samples (wav2vec2 needs 400) failed on golden inputs of 8, and the CLI had
    no way to draw longer ones: the error named only pinning the dim."""
    (tmp_path / "audio.py").write_text(_AUDIO_SOURCE)
    args = ("export", "audio.py:make", "--format", "onnx", "--repository", "repo", "--name", "audio", "--quiet")
    spec = ("--input", "input_values:float32:-1x-1")
    refused = run_modelport(*args, *spec, cwd=tmp_path)
    assert refused.returncode != 0
    assert "input_values[1, 8]" in refused.stderr and "--dynamic-sizes" in refused.stderr, refused.stderr
    done = run_modelport(*args, *spec, "--dynamic-sizes", "40,24", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = read_manifest(tmp_path / "repo" / "audio-onnx" / "1")
    assert [s.shape for s in manifest.inputs] == [(-1, -1)]
    golden = np.load(tmp_path / "repo" / "audio-onnx" / "1" / "golden.npz")
    assert golden["case0/inputs/input_values"].shape == (1, 40)
    assert golden["case1/inputs/input_values"].shape == (3, 24)
