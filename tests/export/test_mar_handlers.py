"""``import-mar`` keeps an archive's handler: built-in ones as processors, custom ones run in-process.

The archives are built with ``torch-model-archiver``; the imported models are served in-process and
asked over TorchServe's ``/predictions`` as TorchServe's clients ask (raw body, multipart, JSON).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelport.cli import main
from modelport.manifest import read_manifest
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings, read_model_config

pytestmark = pytest.mark.torch

ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"
LABELS = {str(i): f"class{i}" for i in range(10)}

EAGER_MODEL = """
import torch


class PixelNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.linear(x)
"""

CLASS_HANDLER = """
import io

import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler


class PixelHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, dict):
                rows.append(torch.tensor(value["pixels"], dtype=torch.float32))
            else:
                image = Image.open(io.BytesIO(value)).convert("L").resize((4, 4))
                rows.append(torch.tensor(list(image.getdata()), dtype=torch.float32) / 255)
        return torch.stack(rows)

    def postprocess(self, output):
        return [{"score": round(float(v), 4), "batch": len(output)} for v in output[:, 0]]
"""

FUNCTION_HANDLER = """
import os

SEEN = {}


def handle(data, context):
    if data is None:
        SEEN["model_dir"] = context.system_properties["model_dir"]
        SEEN["name"] = context.manifest["model"]["modelName"]
        return None
    answers = []
    for row in data:
        value = row.get("data") or row.get("body")
        if value == b"boom":
            raise RuntimeError("the handler failed on purpose")
        here = os.path.isfile(os.path.join(SEEN["model_dir"], "MAR-INF", "MANIFEST.json"))
        answers.append(f"{SEEN['name']}:{len(value)}:{here}")
    return answers
"""


def _archive(tmp_path: Path, name: str, files: dict[str, bytes], **flags: str) -> Path:
    """A .mar built by torch-model-archiver from ``files`` (written to tmp_path) and its flags."""
    source = tmp_path / f"{name}-src"
    source.mkdir()
    for file, data in files.items():
        (source / file).write_bytes(data)
    command = [str(ARCHIVER), "--model-name", name, "--version", "1.0", "--export-path", str(tmp_path), "--force"]
    for flag, value in flags.items():
        value = (
            ",".join(str(source / v) for v in value.split(",")) if flag != "handler" or value.endswith(".py") else value
        )
        command += [f"--{flag.replace('_', '-')}", value]
    staging = tmp_path / f"{name}-archiver-tmp"  # it stages in $TMPDIR/<name>: a private one (xdist runs "m" at once)
    staging.mkdir()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TMPDIR": str(staging)})
    return tmp_path / f"{name}.mar"


def _jpeg(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


@asynccontextmanager
async def _served(repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=20))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await plane.close()


def _import(mar: Path, repo: Path) -> None:
    assert main(["import-mar", str(mar), "--repository", str(repo), "--quiet"]) == 0


def _tiny_cnn(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)
    ).eval()
    torch.jit.trace(model, torch.zeros(1, 3, 224, 224)).save(str(path))


async def test_builtin_image_classifier_needs_no_input_and_answers_top5(tmp_path):
    mar = _cnn_archive(tmp_path)
    repo = tmp_path / "repo"
    _import(mar, repo)
    config = yaml.safe_load((repo / "cnn" / "config.yaml").read_text())
    assert config == {"version_labels": {"1.0": 1}, "processors": {"handler": "image_classifier"}}
    version = repo / "cnn" / "1"
    assert [s.describe() for s in read_manifest(version).inputs] == ["input:float32:-1x3x224x224"]
    assert (version / "index_to_name.json").is_file()
    async with _served(repo) as client:
        response = await client.post("/predictions/cnn", content=_jpeg())  # curl -T cat.jpg
        labelled = await client.post("/predictions/cnn/1.0", content=_jpeg())  # the archive's --version
    assert response.status_code == 200, response.text
    assert labelled.status_code == 200 and labelled.json() == response.json(), labelled.text
    top5 = response.json()
    assert len(top5) == 5
    assert set(top5) <= set(LABELS.values())
    assert 0 < sum(top5.values()) <= 1 + 1e-6  # softmax probabilities, the 5 best of 10
    assert list(top5.values()) == sorted(top5.values(), reverse=True)


def _eager_archive(tmp_path: Path) -> Path:
    import torch

    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "pixelnet.py").write_text(EAGER_MODEL)
    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        from pixelnet import PixelNet  # type: ignore[import-not-found]

        torch.manual_seed(0)
        buffer = io.BytesIO()
        torch.save(PixelNet().state_dict(), buffer)
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        sys.modules.pop("pixelnet", None)
    files = {"pixelnet.py": EAGER_MODEL.encode(), "weights.pth": buffer.getvalue(), "pixel_handler.py": b""}
    files["pixel_handler.py"] = CLASS_HANDLER.encode()
    return _archive(
        tmp_path, "pixels", files, model_file="pixelnet.py", serialized_file="weights.pth", handler="pixel_handler.py"
    )


async def test_custom_handler_over_an_eager_model_answers_raw_multipart_and_json(tmp_path):
    repo = tmp_path / "repo"
    _import(_eager_archive(tmp_path), repo)
    manifest = read_manifest(repo / "pixels" / "1")
    assert manifest.format == "handler"
    assert (repo / "pixels" / "1" / "pixel_handler.py").is_file()
    image = _jpeg(color=(255, 255, 255))
    async with _served(repo) as client:
        raw = await client.post("/predictions/pixels", content=image)
        multipart = await client.post("/predictions/pixels", files={"data": ("a.jpg", image, "image/jpeg")})
        body = {"pixels": [1.0] * 16}
        as_json = await client.post("/predictions/pixels", json=body)
        v2 = await client.post(
            "/v2/models/pixels/infer",
            json={"inputs": [{"name": "data", "datatype": "BYTES", "shape": [1], "data": [json.dumps(body)]}]},
        )
    for response in (raw, multipart, as_json):
        assert response.status_code == 200, response.text
        assert "content-type" not in response.headers  # the handler set none: TorchServe sends none
    assert raw.json()["score"] == multipart.json()["score"] == as_json.json()["score"]  # a white image is all 1.0
    assert v2.status_code == 200, v2.text
    assert json.loads(v2.json()["outputs"][0]["data"][0])["score"] == raw.json()["score"]


def _function_handler_repo(tmp_path, name):
    """A repository with one imported archive whose handler is the module-level ``handle`` of FUNCTION_HANDLER."""
    files = {"fn.py": FUNCTION_HANDLER.encode(), "w.bin": b"x"}
    mar = _archive(tmp_path, name, files, serialized_file="w.bin", handler="fn.py")
    _import(mar, tmp_path / "repo")
    return tmp_path / "repo"


async def test_module_level_handle_function_gets_the_context(tmp_path):
    repo = _function_handler_repo(tmp_path, "lengths")
    async with _served(repo) as client:
        response = await client.post("/predictions/lengths", content=b"hello")
    assert response.status_code == 200, response.text
    assert response.content == b"lengths:5:True"  # a str response: its bytes, as TorchServe writes them


async def test_a_handler_that_raises_fails_only_its_request(tmp_path, caplog):
    repo = _function_handler_repo(tmp_path, "fragile")
    async with _served(repo) as client:
        bodies = [b"one", b"boom", b"three!"]
        responses = await asyncio.gather(*(client.post("/predictions/fragile", content=b) for b in bodies))
    assert [r.status_code for r in responses] == [200, 503, 200]
    assert responses[0].content == b"fragile:3:True"
    assert responses[2].content == b"fragile:6:True"
    # TorchServe's answer (ts/service.py); the traceback is in the log
    assert responses[1].json() == {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
    assert "on purpose" in caplog.text


def test_builtin_handler_still_needs_a_servable_model_file(tmp_path, capsys):
    mar = _archive(tmp_path, "m", {"w.bin": b"x"}, serialized_file="w.bin", handler="image_classifier")
    assert main(["import-mar", str(mar), "--repository", str(tmp_path / "r")]) == 2
    assert "neither TorchScript nor ONNX" in capsys.readouterr().err


def test_handler_source_is_kept_verbatim(tmp_path):
    mar = _archive(
        tmp_path, "f", {"fn.py": FUNCTION_HANDLER.encode(), "w.bin": b"x"}, serialized_file="w.bin", handler="fn.py"
    )
    repo = tmp_path / "repo"
    _import(mar, repo)
    kept = (repo / "f" / "1" / "fn.py").read_text()
    assert kept == textwrap.dedent(FUNCTION_HANDLER)


@pytest.mark.slow
def test_modelport_serve_runs_the_custom_handler(tmp_path):
    from modelport.launcher import LaunchOptions, launched

    repo = tmp_path / "repo"
    _import(_eager_archive(tmp_path), repo)
    options = LaunchOptions(grpc_port=-1, log=tmp_path / "server.log", timeout_s=120)
    with launched(repo, options=options) as server:
        raw = httpx.post(f"{server.url}/predictions/pixels", content=_jpeg(color=(255, 255, 255)), timeout=30)
        as_json = httpx.post(f"{server.url}/predictions/pixels", json={"pixels": [1.0] * 16}, timeout=30)
    assert raw.status_code == 200, raw.text
    assert raw.json()["score"] == as_json.json()["score"]


def _cnn_archive(tmp_path: Path) -> Path:
    _tiny_cnn(tmp_path / "cnn.pt")
    files = {"cnn.pt": (tmp_path / "cnn.pt").read_bytes(), "index_to_name.json": json.dumps(LABELS).encode()}
    return _archive(
        tmp_path, "cnn", files, serialized_file="cnn.pt", handler="image_classifier", extra_files="index_to_name.json"
    )


# TorchServe's built-in vision handlers import torchvision, which cannot be installed beside modelport's
# torch: the built-in image_classifier is compared with TorchServe's transforms in tests/processing instead
@pytest.mark.torchserve
@pytest.mark.parametrize("build", [_eager_archive], ids=["custom-eager"])
def test_answers_match_torchserve_on_the_same_archive(tmp_path, build):
    from modelport.launcher import LaunchOptions, launched
    from modelport.torchserve_process import running_torchserve

    mar = build(tmp_path)
    name = mar.stem
    repo = tmp_path / "repo"
    _import(mar, repo)
    image = _jpeg(size=(300, 260), color=(120, 200, 10))
    requests: list[dict[str, Any]] = [{"content": image}, {"files": {"data": ("a.jpg", image, "image/jpeg")}}]
    if name == "pixels":
        requests.append({"json": {"pixels": [0.25 * (i % 4) for i in range(16)]}})
    with running_torchserve(mar, tmp_path / "ts") as ts:
        expected = [httpx.post(f"{ts.inference}/predictions/{name}", timeout=60, **r) for r in requests]
    with launched(repo, options=LaunchOptions(grpc_port=-1, log=tmp_path / "server.log", timeout_s=120)) as server:
        got = [httpx.post(f"{server.url}/predictions/{name}", timeout=60, **r) for r in requests]
    assert [r.status_code for r in got] == [r.status_code for r in expected] == [200] * len(requests)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.json().keys() == theirs.json().keys()
        assert mine.json() == pytest.approx(theirs.json(), abs=1e-5)


FIRST_ONLY_HANDLER = """
def handle(data, context):
    if data is None:
        return None
    body = data[0].get("data") or data[0].get("body")  # written for TorchServe's default batch size 1
    return [{"length": len(body), "batch": len(data), "batch_size": context.system_properties["batch_size"]}]
"""


def _first_only_archive(tmp_path: Path, config: str | None = None) -> Path:
    files = {"first.py": FIRST_ONLY_HANDLER.encode(), "w.bin": b"x"}
    flags = {"serialized_file": "w.bin", "handler": "first.py"}
    if config is not None:
        files["model-config.yaml"] = config.encode()
        flags["config_file"] = "model-config.yaml"
    return _archive(tmp_path, "first", files, **flags)


async def test_a_handler_gets_batches_of_one_as_torchserve_registers_it_by_default(tmp_path):
    repo = tmp_path / "repo"
    _import(_first_only_archive(tmp_path), repo)
    assert read_manifest(repo / "first" / "1").max_batch_size == 1
    (repo / "first" / "config.yaml").write_text("max_queue_delay_ms: 300\n")  # would gather all three
    async with _served(repo) as client:
        answers = await asyncio.gather(*(client.post("/predictions/first", content=b"x" * n) for n in (1, 2, 3)))
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"length": n, "batch": 1, "batch_size": 1}) for n in (1, 2, 3)
    ]


def test_the_batch_size_comes_from_the_archive_config_or_the_flag(tmp_path):
    mar = _first_only_archive(tmp_path, config="batchSize: 3\nmaxBatchDelay: 50\n")
    _import(mar, tmp_path / "a")
    assert read_manifest(tmp_path / "a" / "first" / "1").max_batch_size == 3  # TorchServe's batch size too
    assert read_model_config(tmp_path / "a" / "first").max_queue_delay_ms == 50, "and its maxBatchDelay"
    command = ["import-mar", str(mar), "--repository", str(tmp_path / "b"), "--max-batch-size", "2", "--quiet"]
    assert main(command) == 0
    assert read_manifest(tmp_path / "b" / "first" / "1").max_batch_size == 2
    (tmp_path / "c").mkdir()
    _import(_first_only_archive(tmp_path / "c", config="maxBatchDelay: 50\n"), tmp_path / "c" / "repo")
    config = yaml.safe_load((tmp_path / "c" / "repo" / "first" / "config.yaml").read_text())
    assert config["max_queue_delay_ms"] == 50, "TorchServe's describe shows it (a batch of one waits for none)"
    (tmp_path / "d").mkdir()
    _import(_first_only_archive(tmp_path / "d"), tmp_path / "d" / "repo")
    config = yaml.safe_load((tmp_path / "d" / "repo" / "first" / "config.yaml").read_text())
    assert config["max_queue_delay_ms"] == 100, "TorchServe's default maxBatchDelay"


async def test_several_files_under_one_name_are_several_requests_even_in_batches_of_one(tmp_path):
    repo = tmp_path / "repo"
    _import(_first_only_archive(tmp_path), repo)
    files = [("data", ("a.txt", b"a" * 3, "text/plain")), ("data", ("b.txt", b"b" * 5, "text/plain"))]
    async with _served(repo) as client:
        both = await client.post("/predictions/first", files=files)
    assert both.status_code == 200, both.text
    assert both.json() == [{"length": 3, "batch": 1, "batch_size": 1}, {"length": 5, "batch": 1, "batch_size": 1}]
