"""Serve a two-model pipeline and check it against running its two models by hand.

    python examples/serve_pipeline.py WORKDIR

Exports two tiny ONNX models with ``modelport.export`` into WORKDIR/repo, served as ``first`` and
``second`` (each takes ``x`` float32 ``[-1, 3]`` and answers ``y = 2 * x``), and copies
``examples/pipeline/config.yaml`` to WORKDIR/repo/quadruple: a pipeline that runs ``first``, then
``second``, then ranks the result with a ``topk`` processor. Then it starts ``modelport serve``,
asks ``quadruple`` over KServe v2 (a batch of two rows) and TorchServe's ``/predictions`` (one
row), and checks the answers against onnxruntime running the two exported files one after the
other: it exits 1 if one is wrong.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.helpers import check, curl, export_onnx, save_onnx
from modelport.launcher import LaunchOptions, launched

PIPELINE = Path(__file__).resolve().parent / "pipeline" / "config.yaml"


def doubler(path: Path) -> Path:
    """y = 2 * x, x float32 [batch, 3]."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    return save_onnx(path, [helper.make_node("Mul", ["x", "two"], ["y"])], [x], [y], two=np.float32(2))


def build_repository(work: Path) -> Path:
    """WORKDIR/repo with the models ``first`` and ``second`` and the pipeline ``quadruple``."""
    repo = work / "repo"
    for name in ("first", "second"):
        exported = export_onnx(doubler(work / f"{name}.onnx"), "x:float32:-1x3", repo, name)
        exported.rename(repo / name)  # served under the folder's name, as the pipeline's steps name them
    (repo / "quadruple").mkdir()
    shutil.copy(PIPELINE, repo / "quadruple" / "config.yaml")
    return repo


def by_hand(repo: Path, x: np.ndarray) -> dict[str, list[object]]:
    """The pipeline's outputs from onnxruntime: ``second(first(x))`` and each row's 2 best scores by index."""
    for name in ("first", "second"):
        session = onnxruntime.InferenceSession(str(repo / name / "1" / "model.onnx"))
        x = session.run(["y"], {"x": x})[0]
    top = [{str(i): float(row[i]) for i in np.argsort(-row, kind="stable")[:2]} for row in x]
    return {"quadrupled": x.tolist(), "top": top}


def main(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)  # `python examples/X.py out/` makes out/
    repo = build_repository(work)
    x = np.array([[1, 2, 3], [0.5, 4, -1]], dtype=np.float32)
    want = by_hand(repo, x)
    with launched(repo, "--log-level", "warning", options=LaunchOptions(timeout_s=120)) as server:
        body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.ravel().tolist()}]}
        v2 = json.loads(curl("-d", json.dumps(body), f"{server.url}/v2/models/quadruple/infer"))
        outputs = {o["name"]: o["data"] for o in v2["outputs"]}
        ok = check("v2 quadrupled", np.reshape(outputs["quadrupled"], (2, 3)).tolist(), want["quadrupled"])
        ok &= check("v2 top       ", [json.loads(row) for row in outputs["top"]], want["top"])
        answer = json.loads(curl("-d", json.dumps(x[0].tolist()), f"{server.url}/predictions/quadruple"))
        # the BYTES output `top` is each row's JSON text: /predictions answers it as that JSON, v2 as the text
        ok &= check("/predictions ", answer, {"quadrupled": want["quadrupled"][0], "top": want["top"][0]})
    return server.process.returncode or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
