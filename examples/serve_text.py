"""Serve a text classifier that takes sentences, and call it with curl, v2 JSON and Triton's client.

    python examples/serve_text.py WORKDIR

Trains a small WordLevel ``tokenizer.json`` with the Hugging Face ``tokenizers`` library on a few
sentences (no download), builds a tiny ONNX sentiment model over its token ids (each word adds its
row of a table to two logits: ``good`` words to ``positive``, ``bad`` words to ``negative``), exports
it into WORKDIR/repo with ``modelport.export`` and gives it processors in its ``config.yaml``
(tokenize to 16 ids; answer both classes by name). Then it starts ``modelport serve``, sends raw
text (``curl --data-binary``), v2 JSON BYTES and tritonclient BYTES, and checks every answer against
the same tokenizer and table in numpy: it exits 1 if one is wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.helpers import check, curl, export_onnx, save_onnx, softmax_top
from modelport.launcher import LaunchOptions, launched

LABELS = ["negative", "positive"]
POSITIVE, NEGATIVE = {"good", "great", "love", "fast"}, {"bad", "awful", "hate", "slow"}
SENTENCES = [
    "the model is good and the server is fast",
    "i love this great little server",
    "the answer was bad and the queue was slow",
    "i hate awful timeouts",
]
MAX_LENGTH = 16
PROCESSORS = {
    "pre": [{"kind": "text", "tokenizer": "tokenizer.json", "max_length": MAX_LENGTH, "attention_mask": None}],
    "post": [{"kind": "topk", "k": 2, "activation": "softmax"}],
}


def train_tokenizer() -> Tokenizer:
    """Lower-cased words, id 0 for padding and 1 for words it never saw."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return tokenizer


def word_table(tokenizer: Tokenizer) -> np.ndarray:
    """[vocabulary, 2]: what each token id adds to the (negative, positive) logits."""
    table = np.zeros((tokenizer.get_vocab_size(), 2), dtype=np.float32)
    for word, index in tokenizer.get_vocab().items():
        table[index] = [word in NEGATIVE, word in POSITIVE]
    return table


def write_onnx(path: Path, table: np.ndarray) -> Path:
    """logits[b] = sum over the sequence of table[input_ids[b, s]] (padding, id 0, adds nothing)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"], axis=0),
        helper.make_node("ReduceSum", ["embedded", "axes"], ["logits"], keepdims=0),
    ]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", MAX_LENGTH])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    return save_onnx(path, nodes, [ids], [logits], table=table, axes=np.array([1], np.int64))


def build_repository(work: Path) -> tuple[Path, Tokenizer, np.ndarray]:
    """WORKDIR/repo/sentiment-onnx with tokenizer.json and labels.txt beside the model, and processors."""
    tokenizer = train_tokenizer()
    table = word_table(tokenizer)
    spec = f"input_ids:int64:-1x{MAX_LENGTH}:0..{len(table)}"  # integer ranges exclude their end
    model = export_onnx(write_onnx(work / "sentiment.onnx", table), spec, work / "repo", "sentiment")
    tokenizer.save(str(model / "1" / "tokenizer.json"))
    (model / "1" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (model / "config.yaml").write_text(yaml.safe_dump({"processors": PROCESSORS}))
    return work / "repo", tokenizer, table


def expected(text: str, tokenizer: Tokenizer, table: np.ndarray) -> dict[str, float]:
    """The answer computed here: the same tokenizer, the same table, softmax, both classes."""
    ids = tokenizer.encode(text).ids[:MAX_LENGTH]
    return softmax_top(table[ids].sum(axis=0), LABELS, k=2)


def main(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)  # `python examples/X.py out/` makes out/
    repo, tokenizer, table = build_repository(work)
    texts = ["The server is great and fast!", "an awful, slow answer"]
    want = [expected(text, tokenizer, table) for text in texts]
    with launched(repo, "--log-level", "warning", options=LaunchOptions(timeout_s=120)) as server:
        raw = curl(
            "--data-binary", texts[0], "-H", "Content-Type: text/plain", f"{server.url}/predictions/sentiment-onnx"
        )
        ok = check("curl raw text", json.loads(raw), want[0])
        body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
        v2 = json.loads(curl("-d", json.dumps(body), f"{server.url}/v2/models/sentiment-onnx/infer"))
        ok &= check("v2 JSON BYTES", [json.loads(row) for row in v2["outputs"][0]["data"]], want)
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        text = triton.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=True)
        rows = client.infer("sentiment-onnx", [text]).as_numpy("output")
        ok &= check("tritonclient", [json.loads(row) for row in rows], want)
        client.close()
    return server.process.returncode or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
