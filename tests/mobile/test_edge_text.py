"""Text travels with the model: the bundle's tokenizer, its labels by name, and raw text samples checked by verify."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelport.mobile import BundleOptions, build_bundle
from modelport.mobile import modelport_edge as edge
from modelport.mobile.report import render_bundle_table
from modelport.processing import ProcessingContext, TextStep
from modelport.processing.text import TextProcessor
from tests.mobile.text_model import MAX_LENGTH, NAMES, SENTENCES, processors_file, text_repo
from tests.processing.tokenizer import build_tokenizer

# runs modelport_edge.py as the device would, with tokenizers made unimportable
WITHOUT_TOKENIZERS = (
    "import runpy, sys; sys.modules['tokenizers'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize(
    "options",
    [
        {"max_length": 16},
        {"max_length": 8, "padding": "longest"},
        {"max_length": 64, "padding": "longest", "token_type_ids": "token_type_ids", "dtype": "int32"},
        {"max_length": 12, "add_special_tokens": False, "pad_id": 3, "attention_mask": None},
    ],
    ids=["max-length", "longest-truncated", "type-ids-int32", "no-specials"],
)
def test_device_tokenization_matches_the_servers(tmp_path, options):
    build_tokenizer(tmp_path / "tokenizer.json")
    server = TextProcessor(TextStep(**options), ProcessingContext(tmp_path, None))
    step = TextStep(**options).model_copy(update={"pad_id": server.pad_id, "dtype": server.dtypes["ids"].name})
    tokenizer = edge.load_tokenizer(tmp_path / "tokenizer.json", step.model_dump(mode="json"))
    for text in SENTENCES:
        [expected] = server([text])
        device = edge.preprocess_text(text.encode(), step.model_dump(mode="json"), tokenizer)
        assert sorted(device) == sorted(expected), text
        for name, array in expected.items():
            assert device[name].dtype == array.dtype and device[name].tolist() == array.tolist(), (text, name)


def test_device_refuses_what_the_server_refuses(tmp_path):
    build_tokenizer(tmp_path / "tokenizer.json")
    step = TextStep(max_length=8, truncation=False, pad_id=0, dtype="int64").model_dump(mode="json")
    tokenizer = edge.load_tokenizer(tmp_path / "tokenizer.json", step)
    [refused] = TextProcessor(TextStep(**step), ProcessingContext(tmp_path, None))([SENTENCES[4]])
    assert "over the limit of 8" in str(refused)
    with pytest.raises(edge.EdgeInputError, match="over the limit of 8 \\(truncation is off\\)"):
        edge.preprocess_text(SENTENCES[4], step, tokenizer)
    with pytest.raises(edge.EdgeInputError, match="not valid UTF-8"):
        edge.preprocess_text(b"\xff\xfe", step, tokenizer)


def _bundle(path: Path) -> dict:
    return json.loads((path / "bundle.json").read_text())


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_text_bundle_carries_its_tokenizer_labels_and_samples(text_bundle):
    bundle = _bundle(text_bundle.path)
    [text] = bundle["processing"]["pre"]
    assert (text["tokenizer"], text["pad_id"], text["dtype"], text["max_length"]) == ("tokenizer.json", 0, "int64", 16)
    assert "tokenizer.json" in bundle["files"] and len(bundle["samples"]) == len(SENTENCES)
    assert bundle["labels"] == ["animals", "nature", "machines"]  # index_to_name.json of the version directory
    assert bundle["processing"]["post"][0]["labels"] == "labels.txt"
    for sample in bundle["samples"]:
        assert set(sample["response"]) <= set(NAMES.values()) and len(sample["response"]) == 2
    assert text_bundle.report.notes == []
    assert text_bundle.report.rows[0].end_to_end_p50_ms is not None
    assert "text->label p50" in render_bundle_table(text_bundle.report)  # was image->label


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_classify_text_answers_like_the_server(text_bundle):
    model = edge.EdgeModel.open(text_bundle.path)  # checks the text samples (tokenizers is here)
    for path, sample in zip(text_bundle.samples, _bundle(text_bundle.path)["samples"], strict=True):
        answer = model.classify_text(path.read_text(encoding="utf-8"), k=None)
        assert list(answer) == list(sample["response"])
        assert list(answer.values()) == pytest.approx(list(sample["response"].values()), abs=1e-5)
    assert len(model.classify_text("the cat", k=1)) == 1


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_verify_and_predict_text_on_the_command_line(text_bundle, capsys):
    assert edge.main(["verify", str(text_bundle.path)]) == 0
    assert f"{len(SENTENCES)} raw samples (decode -> label on this device)" in capsys.readouterr().out
    assert edge.main(["predict", str(text_bundle.path), "--text", SENTENCES[0]]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(_bundle(text_bundle.path)["samples"][0]["response"])


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_a_changed_tokenization_is_refused_naming_the_sample(text_bundle, tmp_path, capsys):
    bundle = shutil.copytree(text_bundle.path, tmp_path / "text")
    data = _bundle(bundle)
    data["processing"]["pre"][0]["add_special_tokens"] = False
    (bundle / "bundle.json").write_text(json.dumps(data))
    assert edge.main(["verify", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and "raw sample samples/" in err and "text processing does not match" in err
    shutil.copytree(text_bundle.path, tmp_path / "corrupt")
    with (tmp_path / "corrupt" / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(edge.BundleError, match=r"tokenizer\.json is corrupted"):
        edge.EdgeModel.open(tmp_path / "corrupt")


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_without_tokenizers_text_says_so_and_verify_checks_the_numbers(text_bundle):
    run = [sys.executable, "-c", WITHOUT_TOKENIZERS, str(text_bundle.path / "modelport_edge.py")]
    verified = subprocess.run([*run, "verify", str(text_bundle.path)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert "golden cases" in verified.stdout
    assert "text samples not checked: tokenizers is not installed" in verified.stdout
    predicted = subprocess.run(
        [*run, "predict", str(text_bundle.path), "--text", "a cat"], capture_output=True, text=True, check=False
    )
    assert predicted.returncode == 2
    assert "text needs Hugging Face tokenizers: pip install tokenizers" in predicted.stderr
    ids = np.zeros((1, MAX_LENGTH), np.int64)
    np.savez(text_bundle.path.parent / "ids.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    numeric = subprocess.run(
        [*run, "predict", str(text_bundle.path), "--input", str(text_bundle.path.parent / "ids.npz")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert numeric.returncode == 0 and numeric.stdout.startswith("0: "), numeric.stderr


@pytest.mark.tflite
@pytest.mark.torch
@pytest.mark.slow
def test_the_top_k_steps_labels_file_names_the_classes_and_no_sample_is_a_warning(tmp_path):
    names = {"0": ["n01", "cat"], "1": ["n02", "tree"]}  # TorchServe's [id, name]; class 2 unnamed
    text_repo(tmp_path / "repo", names, "names.json")
    options = BundleOptions(
        tmp_path / "repo" / "text",
        tmp_path / "bundle",
        processors=processors_file(tmp_path / "processors.yaml", "names.json"),
        latency_runs=5,
        quiet=True,
    )
    report = build_bundle(options)
    assert _bundle(tmp_path / "bundle")["labels"] == ["cat", "tree", "2"]
    assert set(edge.EdgeModel.open(tmp_path / "bundle").classify_text("the cat", k=3)) == {"cat", "tree", "2"}
    [note] = report.notes
    assert "no --sample" in note and "text processing" in note
    assert f"warning: {note}" in render_bundle_table(report)


def _bpe_byte_level(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    tokenizer.save(str(path))


def _unigram(path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.train_from_iterator(
        SENTENCES, trainers.UnigramTrainer(vocab_size=80, unk_token="<unk>", special_tokens=["<unk>"])
    )
    tokenizer.save(str(path))


def _word_level_padded(path: Path) -> None:
    """WordLevel with padding (pad id 1) and truncation of its own in tokenizer.json: the step's win, both sides."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    tokenizer.enable_padding(pad_id=1, pad_token="[PAD]", length=30)
    tokenizer.enable_truncation(max_length=3)
    tokenizer.save(str(path))


@pytest.mark.parametrize("train", [_bpe_byte_level, _unigram, _word_level_padded], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_other_tokenizer_kinds_tokenize_on_the_device_as_on_the_server(tmp_path, train, padding):
    train(tmp_path / "tokenizer.json")
    step = TextStep(max_length=10, padding=padding, token_type_ids="token_type_ids", dtype="int32")
    server = TextProcessor(step, ProcessingContext(tmp_path, None))
    resolved = step.model_copy(update={"pad_id": server.pad_id}).model_dump(mode="json")
    tokenizer = edge.load_tokenizer(tmp_path / "tokenizer.json", resolved)
    for text in SENTENCES:
        [expected] = server([text])
        device = edge.preprocess_text(text, resolved, tokenizer)
        assert {k: v.tolist() for k, v in device.items()} == {k: v.tolist() for k, v in expected.items()}, text
        assert {v.dtype.name for v in device.values()} == {"int32"}
