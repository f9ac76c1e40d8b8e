"""Custom-handler archives answer the same in modelport (``import-mar`` + ``serve``) as in a real TorchServe.

Two archives built with ``torch-model-archiver``, served by one TorchServe 0.12 and by one ``modelport serve``
of the imported repository; each request goes to both and the answers (status, body, the content type and
headers the handler set) must agree:

- ``probe``: a module-level ``handle`` that describes each request as the handler sees it (its keys, each
  value's type and contents, a request header, the batch size in the context), or, for a body ``cmd:NAME``,
  answers in one of the ways handlers answer: dicts, strings, bytes, a tensor (``torch.save``d), a content type,
  a status, a header, or a failure (a numpy array, which is not JSON; an exception, ``PredictionException``,
  MemoryError, a wrong number of responses);
- ``tiny``: a ``BaseHandler`` subclass overriding ``initialize`` (reads an extra file), ``preprocess`` and
  ``postprocess`` over a TorchScript model, with ``index_to_name.json`` and a request header;
- ``bert``: TorchServe's Hugging Face example handler (examples/Huggingface_Transformers/
  Transformer_handler_generalized.py, batched) over a tiny BERT saved with ``save_pretrained`` (safetensors as
  the serialized file, config, vocabulary and tokenizer as extra files), loaded by ``transformers`` in the handler;
- ``hf_tok`` and ``hf_qa``: the newest version of that example handler in its ``token_classification`` and
  ``question_answering`` modes (``HF_MODES`` below: its preprocessing, inference and explanation for those modes,
  configured by the archive's model-config.yaml ``handler:`` section) over tiny random BERTs;
- ``ex``: a ``BaseHandler`` subclass overriding ``explain_handle`` (TorchServe's explanations API), and ``plain``,
  one that does not (``BaseHandler``'s explanation needs captum's ``get_insights``: TorchServe fails it).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from modelport.cli import main
from modelport.torchserve_process import TorchServeOptions, archive, running_torchserve
from tests.serving.processes import serving

pytestmark = [pytest.mark.torchserve, pytest.mark.torch, pytest.mark.slow]

PROBE = """
import json

import numpy
import torch
from ts.utils.util import PredictionException


def _show(value):
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", bytes(value).decode("latin-1")]
    return [type(value).__name__, value]


def _command(row):
    value = row.get("body")
    if isinstance(value, (bytes, bytearray)):  # (a gRPC input entry)
        value = bytes(value).decode("latin-1")
    if isinstance(value, str) and value.startswith("cmd:"):
        return value[4:]
    return None


def handle(data, context):
    if data is None:
        return None
    answers = []
    for i, row in enumerate(data):
        command = _command(row)
        if command is None:
            answers.append({
                "row": {key: _show(value) for key, value in row.items()},
                "custom": context.get_request_header(i, "X-Custom"),
                "batch_size": context.system_properties["batch_size"],
            })
        elif command == "headers":
            answers.append({"headers": sorted(context.get_all_request_header(i) or {})})
        elif command == "dict":
            answers.append({"a": 1, "b": [1.5, "x"]})
        elif command == "str":
            answers.append("plain text")
        elif command == "bytes":
            answers.append(b"\\x00\\x01raw")
        elif command == "csv":
            context.set_response_content_type(i, "text/csv")
            answers.append("a,b\\n1,2\\n")
        elif command == "created":
            context.set_response_status(201, "Created", idx=i)
            answers.append({"created": True})
        elif command == "header":
            context.set_response_header(i, "X-Extra", "yes")
            answers.append("h")
        elif command == "raise":
            raise RuntimeError("the handler failed on purpose")
        elif command == "refuse":
            raise PredictionException("the handler refuses this input", 400)
        elif command == "memory":
            raise MemoryError("out of memory on purpose")
        elif command == "tensor":
            answers.append(torch.tensor([1.5, -2.0]))
        elif command == "numpy":
            answers.append(numpy.arange(3))
        elif command == "none":
            return []
        elif command == "dict-not-list":
            return {"not": "a list"}
    return answers
"""

TINY = """
import json
import os

import torch
from ts.torch_handler.base_handler import BaseHandler


class TinyHandler(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        with open(os.path.join(context.system_properties["model_dir"], "config.json")) as file:
            self.scale = json.load(file)["scale"]

    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray, str)):
                value = json.loads(value)
            if isinstance(value, dict):
                value = value["x"]
            rows.append(torch.tensor(value, dtype=torch.float32) * self.scale)
        return torch.stack(rows).to(self.device)

    def postprocess(self, output):
        probabilities = torch.softmax(output, 1)
        return [
            {
                "label": self.mapping[str(int(p.argmax()))],
                "p": float(p.max()),
                "model": self.manifest["model"]["modelName"],
                "device": str(self.device),
                "custom": self.context.get_request_header(i, "x-custom"),
            }
            for i, p in enumerate(probabilities)
        ]
"""


BERT = """
import json
import os

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler


class TransformersSeqClassifierHandler(BaseHandler):
    def initialize(self, ctx):
        self.manifest = ctx.manifest
        model_dir = ctx.system_properties.get("model_dir")
        self.device = torch.device("cpu")
        with open(os.path.join(model_dir, "setup_config.json")) as f:
            self.setup_config = json.load(f)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, do_lower_case=self.setup_config["do_lower_case"])
        self.model.to(self.device)
        self.model.eval()
        with open(os.path.join(model_dir, "index_to_name.json")) as f:
            self.mapping = json.load(f)
        self.initialized = True

    def preprocess(self, requests):
        input_ids_batch, attention_mask_batch = None, None
        for data in requests:
            text = data.get("data")
            if text is None:
                text = data.get("body")
            if isinstance(text, (bytes, bytearray)):
                text = text.decode("utf-8")
            inputs = self.tokenizer(
                text, max_length=int(self.setup_config["max_length"]), padding="max_length",
                add_special_tokens=True, return_tensors="pt", truncation=True,
            )
            if input_ids_batch is None:
                input_ids_batch, attention_mask_batch = inputs["input_ids"], inputs["attention_mask"]
            else:
                input_ids_batch = torch.cat((input_ids_batch, inputs["input_ids"]), 0)
                attention_mask_batch = torch.cat((attention_mask_batch, inputs["attention_mask"]), 0)
        return (input_ids_batch, attention_mask_batch)

    def inference(self, input_batch):
        input_ids_batch, attention_mask_batch = input_batch
        with torch.no_grad():
            predictions = self.model(input_ids_batch, attention_mask_batch)
        inferences = []
        for i in range(predictions[0].shape[0]):
            out = predictions[0][i].unsqueeze(0)
            inferences.append({"label": self.mapping[str(out.argmax(1).item())], "logits": out[0].tolist()})
        return inferences

    def postprocess(self, inference_output):
        return inference_output
"""


# TorchServe's example handler (pytorch/serve examples/Huggingface_Transformers/Transformer_handler_generalized.py,
# newest version: config from ctx.model_yaml_config["handler"]) in the two modes tested here, abridged to them. Its
# edits, needed in both servers: transformers 5 has no encode_plus(pad_to_max_length=True) (tokenizer(...,
# padding="max_length") instead) and captum is not installed (imported if present: explanations fail without it).
HF_MODES = """
import ast
import json
import os

import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler

try:
    from captum.attr import LayerIntegratedGradients
except ImportError:
    LayerIntegratedGradients = None


class TransformersSeqClassifierHandler(BaseHandler):
    def initialize(self, ctx):
        self.manifest = ctx.manifest
        self.model_yaml_config = ctx.model_yaml_config if ctx is not None and hasattr(ctx, "model_yaml_config") else {}
        model_dir = ctx.system_properties.get("model_dir")
        self.device = torch.device("cpu")
        self.setup_config = self.model_yaml_config.get("handler", {})
        if self.setup_config["mode"] == "question_answering":
            self.model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
        elif self.setup_config["mode"] == "token_classification":
            self.model = AutoModelForTokenClassification.from_pretrained(model_dir)
        self.model.to(self.device)
        # (a path relative to the working directory, as in the example: TorchServe's worker runs in model_dir)
        if any(f for f in os.listdir(model_dir) if f.startswith("vocab.") and os.path.isfile(f)):
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, do_lower_case=self.setup_config["do_lower_case"])
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.setup_config["model_name"], do_lower_case=self.setup_config["do_lower_case"]
            )
        self.model.eval()
        if not self.setup_config["mode"] == "question_answering":
            with open(os.path.join(model_dir, "index_to_name.json")) as f:
                self.mapping = json.load(f)
        self.initialized = True

    def preprocess(self, requests):
        input_ids_batch = None
        attention_mask_batch = None
        for idx, data in enumerate(requests):
            input_text = data.get("data")
            if input_text is None:
                input_text = data.get("body")
            if isinstance(input_text, (bytes, bytearray)):
                input_text = input_text.decode("utf-8")
            if self.setup_config["captum_explanation"] and not self.setup_config["mode"] == "question_answering":
                input_text_target = ast.literal_eval(input_text)
                input_text = input_text_target["text"]
            max_length = self.setup_config["max_length"]
            if self.setup_config["mode"] == "token_classification":
                inputs = self.tokenizer(
                    input_text, max_length=int(max_length), padding="max_length", add_special_tokens=True,
                    return_tensors="pt",
                )
            elif self.setup_config["mode"] == "question_answering":
                question_context = ast.literal_eval(input_text)
                question = question_context["question"]
                context = question_context["context"]
                inputs = self.tokenizer(
                    question, context, max_length=int(max_length), padding="max_length", add_special_tokens=True,
                    return_tensors="pt",
                )
            input_ids = inputs["input_ids"].to(self.device)
            attention_mask = inputs["attention_mask"].to(self.device)
            if input_ids_batch is None:
                input_ids_batch = input_ids
                attention_mask_batch = attention_mask
            else:
                input_ids_batch = torch.cat((input_ids_batch, input_ids), 0)
                attention_mask_batch = torch.cat((attention_mask_batch, attention_mask), 0)
        return (input_ids_batch, attention_mask_batch)

    @torch.inference_mode
    def inference(self, input_batch):
        input_ids_batch, attention_mask_batch = input_batch
        inferences = []
        if self.setup_config["mode"] == "question_answering":
            outputs = self.model(input_ids_batch, attention_mask_batch)
            answer_start_scores = outputs.start_logits
            answer_end_scores = outputs.end_logits
            num_rows, num_cols = answer_start_scores.shape
            for i in range(num_rows):
                answer_start = torch.argmax(answer_start_scores[i].unsqueeze(0))
                answer_end = torch.argmax(answer_end_scores[i].unsqueeze(0)) + 1
                prediction = self.tokenizer.convert_tokens_to_string(
                    self.tokenizer.convert_ids_to_tokens(input_ids_batch[i].tolist()[answer_start:answer_end])
                )
                inferences.append(prediction)
        elif self.setup_config["mode"] == "token_classification":
            outputs = self.model(input_ids_batch, attention_mask_batch)[0]
            num_rows = outputs.shape[0]
            for i in range(num_rows):
                output = outputs[i].unsqueeze(0)
                predictions = torch.argmax(output, dim=2)
                tokens = self.tokenizer.tokenize(self.tokenizer.decode(input_ids_batch[i]))
                if self.mapping:
                    label_list = self.mapping["label_list"]
                label_list = label_list.strip("][").split(", ")
                prediction = [(token, label_list[p]) for token, p in zip(tokens, predictions[0].tolist())]
                inferences.append(prediction)
        return inferences

    def postprocess(self, inference_output):
        return inference_output

    def get_insights(self, input_batch, text, target):
        if self.setup_config["captum_explanation"]:
            embedding_layer = getattr(self.model, self.setup_config["embedding_name"])
            self.lig = LayerIntegratedGradients(captum_sequence_forward, embedding_layer.embeddings)
        raise AssertionError("unreachable without captum")


def captum_sequence_forward(inputs, attention_mask=None, position=0, model=None):
    model.eval()
    model.zero_grad()
    return model(inputs, attention_mask=attention_mask)[position]
"""

EX = """
from ts.torch_handler.base_handler import BaseHandler


class ExplainingHandler(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def preprocess(self, data):
        return [row.get("data") or row.get("body") for row in data]

    def inference(self, data):
        explain = [self.context.get_request_header(i, "explain") for i in range(len(data))]
        return [{"predicted": len(x or ""), "explain": e} for x, e in zip(data, explain)]

    def postprocess(self, data):
        return data

    def explain_handle(self, data_preprocess, raw_data):
        explain = [self.context.get_request_header(i, "explain") for i in range(len(raw_data))]
        rows = zip(data_preprocess, explain)
        return [{"explained": len(x or ""), "explain": e, "flag": self.explain} for x, e in rows]
"""

PLAIN = """
from ts.torch_handler.base_handler import BaseHandler


class PlainHandler(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def preprocess(self, data):
        return [row.get("data") or row.get("body") for row in data]

    def inference(self, data):
        return [{"n": len(x or "")} for x in data]

    def postprocess(self, data):
        return data
"""

HF = {"hf_tok": "token_classification", "hf_qa": "question_answering"}
WORDS = ["the", "a", "movie", "film", "was", "is", "great", "good", "bad", "terrible", "fine", "i", "loved", "hated"]
WORDS += ["it", "this", "plot", "acting", "who", "what", "paris", "lives", "in", "anna"]


def _hf_mode(work: Path, mode: str) -> tuple[Path, list[Path], Path]:
    """A tiny random BERT for the example's ``mode``, its vocabulary and tokenizer, index_to_name.json (token
    classification's ``label_list``) and the example's model-config.yaml: (serialized file, extra files, config)."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertTokenizerFast

    torch.manual_seed(1)
    folder = work / mode
    _write(folder, {"vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n"})
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    if mode == "token_classification":
        config.num_labels = 3
        BertForTokenClassification(config).eval().save_pretrained(str(folder))
        _write(folder, {"index_to_name.json": json.dumps({"label_list": "[O, B-PER, I-PER]"})})
    else:
        BertForQuestionAnswering(config).eval().save_pretrained(str(folder))
    serialized = folder / "model.safetensors"
    extra = sorted(p for p in folder.iterdir() if p != serialized)
    handler = {
        "model_name": "bert-base-uncased",
        "mode": mode,
        "do_lower_case": True,
        "num_labels": 3 if mode == "token_classification" else 2,
        "save_mode": "pretrained",
        "max_length": 24,
        "captum_explanation": True,
        "embedding_name": "bert",
        "BetterTransformer": False,
        "model_parallel": False,
    }
    yaml = "minWorkers: 1\nmaxWorkers: 1\nhandler:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in handler.items())
    return serialized, extra, _write(work / f"{mode}-config", {"model-config.yaml": yaml})["model-config.yaml"]


def _bert(work: Path) -> tuple[Path, list[Path]]:
    """A tiny BERT classifier as ``save_pretrained`` writes it, its vocabulary and tokenizer, and the example's
    setup_config.json and index_to_name.json: (serialized file, extra files)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    folder = work / "bert"
    words = [
        "the",
        "a",
        "movie",
        "film",
        "was",
        "is",
        "great",
        "good",
        "bad",
        "terrible",
        "fine",
        "i",
        "loved",
        "hated",
        "it",
        "this",
        "plot",
        "acting",
    ]
    _write(folder, {"vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"})
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertForSequenceClassification(config).eval().save_pretrained(str(folder))
    setup = {"mode": "sequence_classification", "do_lower_case": True, "max_length": "16", "save_mode": "pretrained"}
    _write(folder, {"setup_config.json": json.dumps(setup), "index_to_name.json": '{"0": "neg", "1": "pos"}'})
    serialized = folder / "model.safetensors"
    return serialized, sorted(p for p in folder.iterdir() if p != serialized)


class Servers(NamedTuple):
    torchserve: str
    modelport: str
    management: str  # TorchServe's management API (its own port)


def _write(folder: Path, files: dict[str, str | bytes]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return {name: folder / name for name in files}


def _archives(work: Path) -> list[Path]:
    import torch

    torch.manual_seed(0)
    model = torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.zeros(1, 4))
    model.save(str(work / "tiny.pt"))
    labels = json.dumps({"0": "cat", "1": "dog", "2": "bird"})
    sources = {"probe.py": PROBE, "w.bin": b"x", "tiny_handler.py": TINY, "bert.py": BERT}
    files = _write(work / "src", {**sources, "hf.py": HF_MODES, "ex.py": EX, "plain.py": PLAIN})
    extra = _write(work / "src", {"index_to_name.json": labels, "config.json": json.dumps({"scale": 0.5})})
    store = work / "store"
    bert, bert_files = _bert(work)
    hf = {name: _hf_mode(work, mode) for name, mode in HF.items()}
    return [
        archive(files["w.bin"], files["probe.py"], "probe", store),
        archive(work / "tiny.pt", files["tiny_handler.py"], "tiny", store, extra_files=list(extra.values())),
        archive(bert, files["bert.py"], "bert", store, extra_files=bert_files),
        *(
            archive(model, files["hf.py"], name, store, extra_files=extra, config_file=config)
            for name, (model, extra, config) in hf.items()
        ),
        archive(files["w.bin"], files["ex.py"], "ex", store),
        archive(files["w.bin"], files["plain.py"], "plain", store),
    ]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """TorchServe (batch size 4) and modelport (imported with --max-batch-size 4) serving both archives."""
    work = tmp_path_factory.mktemp("handlers")
    mars = _archives(work)
    repo = work / "repo"
    for mar in mars:
        command = ["import-mar", str(mar), "--repository", str(repo), "--max-batch-size", "4", "--quiet"]
        assert main(command) == 0
    command[1] = str(mars[1])
    assert main([*command[:-1], "--name", "tiny-workers", "--quiet"]) == 0  # the same, in a worker process
    for name in ("tiny-workers", *HF):  # (the example opens vocab.* by a relative path: TorchServe's worker
        config = repo / name / "config.yaml"  # runs in the model's folder, as modelport's worker processes do)
        config.write_text(config.read_text() + "workers: 1\n")
    options = TorchServeOptions(batch_size=4, also=tuple(m.name for m in mars[1:]))
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mars[0], work / "ts", options))
        mp = stack.enter_context(serving(repo, log=work / "server.log", ports=(0, -1)))
        yield Servers(ts.inference, mp.url, ts.management)


def _both(servers: Servers, model: str, mine: str = "", **request: Any) -> tuple[httpx.Response, httpx.Response]:
    """``model`` may name a version, TorchServe's way (``probe/1.0``: the archive's --version); ``mine``: the
    name modelport serves it by, if another."""
    theirs = httpx.post(f"{servers.torchserve}/predictions/{model}", timeout=60, **request)
    return theirs, httpx.post(f"{servers.modelport}/predictions/{mine or model}", timeout=60, **request)


def _same(theirs: httpx.Response, mine: httpx.Response) -> None:
    """Same status, same body (JSON compared parsed), and the content type and headers the handler set."""
    assert mine.status_code == theirs.status_code, (theirs.text, mine.text)
    try:
        expected = theirs.json()
    except ValueError:
        assert mine.content == theirs.content
    else:
        assert mine.json() == expected  # the same torch in both: the same floats
    if "content-type" in theirs.headers:
        assert mine.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0]
    assert mine.headers.get("x-extra") == theirs.headers.get("x-extra")


TEXT = ("note.txt", b"hello\n", "text/plain")
JSON_FILE = ("meta.json", b'{"k": [1, 2]}', "application/json")

REQUESTS: dict[str, dict[str, Any]] = {
    "raw body (curl -T)": {"content": b"\x89PNG raw bytes"},
    "text/plain": {"content": "some text", "headers": {"content-type": "text/plain"}},
    "JSON object": {"json": {"x": [1, 2]}},
    "JSON with charset": {"content": b'{"x": 1}', "headers": {"content-type": "application/json; charset=utf-8"}},
    "JSON string": {"content": b'"a string"', "headers": {"content-type": "application/json"}},
    "JSON number": {"content": b"42", "headers": {"content-type": "application/json"}},
    "not JSON, said JSON": {"content": b"{oops", "headers": {"content-type": "application/json"}},
    "JSON sent as bytes": {"content": b'{"x": 1}', "headers": {"content-type": "application/octet-stream"}},
    "multipart, one file": {"files": {"data": TEXT}},
    "multipart, named parts": {"files": {"image": ("a.bin", b"\x00\x01", "image/png"), "meta": JSON_FILE}},
    "multipart, a form field": {"data": {"name": "value"}, "files": {"data": TEXT}},
    "form-urlencoded": {"content": b"a=1&b=two", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    "empty body": {"content": b""},
    "a request header": {"content": b"x", "headers": {"X-Custom": "abc"}},
}


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
def test_the_handler_sees_each_request_as_in_torchserve(servers: Servers, request_: dict[str, Any]) -> None:
    theirs, mine = _both(servers, "probe", **request_)
    assert theirs.status_code == 200, theirs.text
    _same(theirs, mine)


COMMANDS = ["dict", "str", "bytes", "csv", "created", "header", "tensor", "numpy"]
COMMANDS += ["raise", "refuse", "memory", "none", "dict-not-list"]


@pytest.mark.parametrize("command", COMMANDS)
def test_responses_and_failures_are_answered_as_torchserve_answers_them(servers: Servers, command: str) -> None:
    theirs, mine = _both(servers, "probe", content=f"cmd:{command}", headers={"content-type": "text/plain"})
    _same(theirs, mine)
    if theirs.status_code >= 400:
        assert mine.json() == {k: theirs.json()[k] for k in ("code", "type", "message")}


TINY_REQUESTS: dict[str, dict[str, Any]] = {
    "JSON": {"json": {"x": [1, 2, 3, 4]}},
    "JSON list and a header": {"json": [4, 3, 2, 1], "headers": {"x-custom": "hi"}},
    "multipart JSON file": {"files": {"data": ("x.json", b'{"x": [0, 1, 0, 1]}', "application/octet-stream")}},
    "wrong shape": {"json": {"x": [1, 2, 3]}},
}


@pytest.mark.parametrize("workers", [False, True], ids=["threads", "worker process"])
@pytest.mark.parametrize("request_", TINY_REQUESTS.values(), ids=TINY_REQUESTS.keys())
def test_a_base_handler_subclass_answers_as_in_torchserve(
    servers: Servers, request_: dict[str, Any], workers: bool
) -> None:
    theirs, mine = _both(servers, "tiny", "tiny-workers" if workers else "", **request_)
    _same(theirs, mine)


TEXTS = ["I loved this movie, the acting was great", "terrible plot", "fine", "was it good?", "the " * 40]


@pytest.mark.parametrize("how", ["raw", "multipart", "text/plain", "JSON string"])
def test_the_hugging_face_example_handler_answers_as_in_torchserve(servers: Servers, how: str) -> None:
    for text in TEXTS:
        request: dict[str, Any] = {
            "raw": {"content": text.encode()},
            "multipart": {"files": {"data": ("t.txt", text.encode(), "text/plain")}},
            "text/plain": {"content": text, "headers": {"content-type": "text/plain"}},
            "JSON string": {"json": text},
        }[how]
        theirs, mine = _both(servers, "bert", **request)
        assert theirs.status_code == 200, theirs.text
        _same(theirs, mine)


def test_the_hugging_face_example_handler_batches_as_in_torchserve(servers: Servers) -> None:
    async def together(url: str) -> list[httpx.Response]:  # four at once: one batch of four (or fewer) rows
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/predictions/bert", content=t.encode()) for t in TEXTS))

    theirs, mine = asyncio.run(together(servers.torchserve)), asyncio.run(together(servers.modelport))
    for a, b in zip(theirs, mine, strict=True):
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        assert b.json()["label"] == a.json()["label"]  # rows batched differently: the same logits to float rounding
        assert b.json()["logits"] == pytest.approx(a.json()["logits"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_the_archive_version_names_it_as_in_torchserve(servers: Servers, version: str) -> None:
    theirs, mine = _both(servers, f"probe/{version}", content=b"cmd:dict", headers={"content-type": "text/plain"})
    _same(theirs, mine)
    if version == "2.0":
        assert mine.json()["type"] == theirs.json()["type"] == "ModelVersionNotFoundException"


# (method, path on modelport, path on TorchServe's inference API or None: its management API's (below))
ROUTING = {
    "no model named": ("POST", "/predictions", "/predictions"),
    "past a model's version": ("GET", "/models/probe/1.0/x", "/models/probe/1.0/x"),
    "management: POST /models": ("POST", "/models", None),
    "management: DELETE /models/m": ("DELETE", "/models/probe", None),
}


@pytest.mark.parametrize(("method", "path", "theirs_path"), ROUTING.values(), ids=ROUTING.keys())
def test_routing_errors_are_answered_as_torchserve_answers_them(
    servers: Servers, method: str, path: str, theirs_path: str | None
) -> None:
    """A path under TorchServe's routes that names nothing: its 404 ResourceNotFoundException; its model API
    (register, unregister) while it is off: its 405 MethodNotAllowedException, modelport's message adding the flag
    that turns it on (its inference API runs any method)."""
    theirs = httpx.request(method, (servers.torchserve if theirs_path else servers.management) + (theirs_path or path))
    mine = httpx.request(method, servers.modelport + path)
    assert theirs.status_code in (404, 405), theirs.text
    expected = theirs.json()
    if theirs_path is None:  # the model API, off
        expected["message"] += " (modelport: start the server with --model-control)"
    assert (mine.status_code, mine.json()) == (theirs.status_code, expected)


@pytest.mark.parametrize(("method", "path"), [("GET", "/predictions/probe"), ("DELETE", "/ping"), ("PUT", "/ping")])
def test_a_wrong_method_on_the_inference_api_is_torchserves_405(servers: Servers, method: str, path: str) -> None:
    """TorchServe's inference API runs these (any method predicts; /ping answers any); modelport refuses them
    with the 405 body TorchServe's management API sends for a wrong method, not a body of its own."""
    theirs = httpx.delete(servers.management + "/models")
    mine = httpx.request(method, servers.modelport + path)
    assert (mine.status_code, mine.json()) == (405, theirs.json()), mine.text
    assert mine.headers["allow"] in ("POST, PUT", "GET, HEAD")


def _same_or_503(theirs: httpx.Response, mine: httpx.Response) -> None:
    _same(theirs, mine)
    if theirs.status_code >= 400:
        assert mine.json() == {k: theirs.json()[k] for k in ("code", "type", "message")}


def _hf_requests(text: str) -> dict[str, dict[str, Any]]:
    return {
        "raw": {"content": text.encode()},
        "multipart": {"files": {"data": ("t.txt", text.encode(), "text/plain")}},
        "text/plain": {"content": text, "headers": {"content-type": "text/plain"}},
        "JSON string": {"json": text},
        "JSON object": {"json": ast.literal_eval(text)},  # a dict, which the example's literal_eval refuses: 503
    }


HF_TEXTS = {
    "hf_tok": [str({"text": t, "target": 1}) for t in ["anna lives in paris", "who loved the film", "it was bad"]],
    "hf_qa": [
        str({"question": "who lives in paris", "context": "anna lives in paris"}),
        str({"question": "what was great", "context": "the acting was great, the plot was bad"}),
        str({"question": "who", "context": "i"}),
    ],
}


@pytest.mark.parametrize("how", ["raw", "multipart", "text/plain", "JSON string", "JSON object"])
@pytest.mark.parametrize("model", HF)
def test_the_hugging_face_example_handlers_other_modes_answer_as_in_torchserve(
    servers: Servers, model: str, how: str
) -> None:
    for text in HF_TEXTS[model]:
        theirs, mine = _both(servers, model, **_hf_requests(text)[how])
        assert theirs.status_code == (503 if how == "JSON object" else 200), theirs.text
        _same_or_503(theirs, mine)


@pytest.mark.parametrize("model", HF)
def test_the_hugging_face_example_handlers_other_modes_batch_as_in_torchserve(servers: Servers, model: str) -> None:
    texts = HF_TEXTS[model] * 2

    async def together(url: str) -> list[httpx.Response]:  # at once: batches of up to four rows
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/predictions/{model}", content=t) for t in texts))

    theirs, mine = asyncio.run(together(servers.torchserve)), asyncio.run(together(servers.modelport))
    for a, b in zip(theirs, mine, strict=True):
        assert a.status_code == 200, a.text
        _same(a, b)  # labels and answer spans: argmaxes, the same however rows were batched


EXPLANATIONS: dict[str, dict[str, Any]] = {
    "raw body": {"content": b"hello"},
    "JSON": {"json": {"data": "abc", "target": 1}},
    "multipart": {"files": {"data": ("a.txt", b"abc", "text/plain")}},
    "the client says explain: False": {"content": b"x", "headers": {"explain": "False"}},
    "PUT": {"content": b"hello", "method": "PUT"},
}


@pytest.mark.parametrize("request_", EXPLANATIONS.values(), ids=EXPLANATIONS.keys())
def test_explanations_run_the_handlers_explain_handle_as_in_torchserve(
    servers: Servers, request_: dict[str, Any]
) -> None:
    request = dict(request_)
    method = request.pop("method", "POST")
    theirs, mine = (httpx.request(method, f"{url}/explanations/ex", timeout=60, **request) for url in servers[:2])
    assert (theirs.status_code, theirs.json()["explain"], theirs.json()["flag"]) == (200, "True", True), theirs.text
    _same(theirs, mine)


# (path on TorchServe, path on modelport): by version, KServe's routes, what cannot explain, what is not there
EXPLAIN_PATHS = {
    "archive version": ("/explanations/ex/1.0", ""),
    "missing version": ("/explanations/ex/2.0", ""),
    "missing model": ("/explanations/nosuch", ""),
    "no model named": ("/explanations", ""),
    "KServe v1": ("/v1/models/ex:explain", ""),
    "KServe v2": ("/v2/models/ex/explain", ""),
    "no explain_handle": ("/explanations/plain", ""),
    "no get_insights, a worker process": ("/explanations/tiny", "/explanations/tiny-workers"),
    "the example's explanation, no captum": ("/explanations/hf_tok", ""),
}


@pytest.mark.parametrize(("path", "mine"), EXPLAIN_PATHS.values(), ids=EXPLAIN_PATHS.keys())
def test_explanation_routes_answer_as_in_torchserve(servers: Servers, path: str, mine: str) -> None:
    body = HF_TEXTS["hf_tok"][0] if "hf_tok" in path else '{"x": [1, 2, 3, 4]}'
    theirs = httpx.post(servers.torchserve + path, content=body, timeout=60)
    answer = httpx.post(servers.modelport + (mine or path), content=body, timeout=60)
    if "nosuch" in path:  # modelport's message names the model its own way (as on /predictions)
        assert (answer.status_code, answer.json()["type"]) == (404, theirs.json()["type"]), answer.text
        return
    _same_or_503(theirs, answer)
    assert theirs.status_code != 200 or theirs.json()["explain"] == "True"


def test_a_prediction_is_never_an_explanation(servers: Servers) -> None:
    """TorchServe's frontend sets ``explain: False`` on predictions, whatever the client sent; explanations and
    predictions that share a batch are each answered as what they are."""
    for headers in ({}, {"explain": "True"}, {"Explain": "True"}):
        theirs, mine = _both(servers, "ex", content=b"hello", headers=headers)
        assert theirs.json() == {"predicted": 5, "explain": "False"}
        _same(theirs, mine)

    async def mixed() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            apis = ["explanations", "predictions"] * 2
            return await asyncio.gather(*(client.post(f"{servers.modelport}/{a}/ex", content=b"abc") for a in apis))

    answers = [r.json() for r in asyncio.run(mixed())]
    expected = {"explained": 3, "explain": "True", "flag": True}
    assert answers == [expected, {"predicted": 3, "explain": "False"}] * 2
