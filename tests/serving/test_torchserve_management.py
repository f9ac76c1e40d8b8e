"""TorchServe's management API, write side: register, scale, set-default, unregister on ``modelport serve``.

Two archives of one model (``tiny`` 1.0 and 2.0: a ``BaseHandler`` subclass over TorchScript) lie in a model
store; a ``modelport serve --model-control --model-store STORE --control-key KEY`` of an empty repository
registers them through ``POST /models``, predicts, scales, sets the default version and unregisters, and
answers the error paths. Then the same requests go to a real TorchServe 0.12 (``enable_model_api``) and to a
fresh modelport, and the answers must agree: status code, body keys, the error's type and each message.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml

from modelport.errors import InvalidArgumentError
from modelport.serving.auth import http_scope
from modelport.serving.torchserve_api import model_page
from modelport.serving.torchserve_management import registration
from modelport.torchserve_process import TorchServeOptions, archive, running_torchserve
from tests.serving.processes import serving
from tests.serving.test_torchserve_handlers import TINY

KEY = "control-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROW = {"json": {"x": [1, 2, 3, 4]}}


class Store(NamedTuple):
    folder: Path
    first: Path  # first.mar: what TorchServe serves at start (it needs one model to be ready)
    tiny: Path  # tiny.mar, version 1.0
    tiny2: Path  # tiny2.mar, version 2.0 of the same model


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("management"))


def make_store(work: Path) -> Store:
    """The model store: first.mar, tiny.mar (1.0), tiny2.mar (2.0 of tiny), bad.mar and plain.mar (no handler)."""
    import torch

    torch.manual_seed(0)
    torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.zeros(1, 4)).save(str(work / "tiny.pt"))
    src = work / "src"
    src.mkdir()
    (src / "tiny_handler.py").write_text(TINY)
    (src / "index_to_name.json").write_text(json.dumps({"0": "cat", "1": "dog", "2": "bird"}))
    (src / "config.json").write_text(json.dumps({"scale": 0.5}))
    extra = [src / "index_to_name.json", src / "config.json"]
    folder = work / "store"

    def make(name: str, version: str = "1.0") -> Path:
        return archive(work / "tiny.pt", src / "tiny_handler.py", name, folder, extra_files=extra, version=version)

    first, tiny = make("first"), make("tiny")
    made = archive(work / "tiny.pt", src / "tiny_handler.py", "tiny", work / "v2", extra_files=extra, version="2.0")
    tiny2 = folder / "tiny2.mar"
    made.rename(tiny2)
    (folder / "bad.mar").write_bytes(b"not an archive")
    # TorchScript whose handler is neither built in nor in the archive: exported to tensors, so it needs --input
    manifest = {"model": {"modelName": "plain", "modelVersion": "1.0", "serializedFile": "tiny.pt"}}
    with zipfile.ZipFile(folder / "plain.mar", "w") as plain:
        plain.writestr("MAR-INF/MANIFEST.json", json.dumps({**manifest, "runtime": "python"}))
        plain.write(work / "tiny.pt", "tiny.pt")
    return Store(folder, first, tiny, tiny2)


@contextlib.contextmanager
def _modelport(store: Store, repo: Path, *flags: str) -> Iterator[str]:
    repo.mkdir()
    with serving(repo, "--model-store", str(store.folder), *flags, log=repo.parent / f"{repo.name}.log") as served:
        yield served.url


def _call(base: str, method: str, path: str, **request: Any) -> httpx.Response:
    return httpx.request(method, f"{base}{path}", timeout=300, **request)


@pytest.mark.torch
@pytest.mark.slow
def test_register_predict_scale_set_default_and_unregister(store: Store, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with _modelport(store, repo, "--model-control", "--control-key", KEY) as url:
        refused = _call(url, "POST", "/models?url=tiny.mar")
        assert refused.status_code == 401, "registering is model control: it needs the control key"
        assert _call(url, "GET", "/models").status_code == 200, "the read side needs no control key"

        query = "/models?url=tiny.mar&initial_workers=1&synchronous=true&batch_size=4&max_batch_delay=50"
        first = _call(url, "POST", query, headers=AUTH)
        assert first.status_code == 200, first.text
        assert first.json() == {"status": 'Model "tiny" Version: 1.0 registered with 1 initial workers'}
        config = yaml.safe_load((repo / "tiny" / "config.yaml").read_text())
        assert config["max_queue_delay_ms"] == 50
        assert config["version_labels"] == {"1.0": 1}
        assert config["default_version"] == 1
        described = _call(url, "GET", "/models/tiny").json()
        assert [(d["modelVersion"], d["batchSize"], d["maxBatchDelay"]) for d in described] == [("1", 4, 50)]

        answer = _call(url, "POST", "/predictions/tiny", **ROW)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == "dog"
        assert _call(url, "POST", "/predictions/tiny/1.0", **ROW).json() == answer.json()

        again = _call(url, "POST", "/models?url=tiny.mar&synchronous=true", headers=AUTH)
        assert again.status_code == 409, again.text
        assert again.json()["type"] == "ConflictStatusException"

        second = _call(url, "POST", f"/models?url=file://{store.tiny2}", headers=AUTH)
        assert second.json() == {"status": 'Model "tiny" Version: 2.0 registered with 1 initial workers'}
        assert [d["modelVersion"] for d in _call(url, "GET", "/models/tiny/all").json()] == ["1", "2"]
        assert yaml.safe_load((repo / "tiny" / "config.yaml").read_text())["default_version"] == 1

        scaled = _call(url, "PUT", "/models/tiny?min_worker=2&synchronous=true", headers=AUTH)
        assert scaled.json() == {"status": "Workers scaled to 2 for model: tiny"}
        workers = [len(d["workers"]) for d in _call(url, "GET", "/models/tiny/all").json()]
        assert workers == [2, 2], "instances are per model: both versions run two"
        assert _call(url, "POST", "/predictions/tiny", **ROW).json() == answer.json()

        default = _call(url, "PUT", "/models/tiny/2.0/set-default", headers=AUTH)
        assert default.json() == {"status": 'Default version successfully updated for model "tiny" to "2.0"'}
        assert yaml.safe_load((repo / "tiny" / "config.yaml").read_text())["default_version"] == 2

        refused = _call(url, "DELETE", "/models/tiny/2.0", headers=AUTH)
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"] == "InvalidModelVersionException"
        removed = _call(url, "DELETE", "/models/tiny/1.0", headers=AUTH)
        assert removed.json() == {"status": 'Model "tiny" unregistered'}
        assert _call(url, "POST", "/predictions/tiny/1.0", **ROW).status_code == 404
        assert _call(url, "POST", "/predictions/tiny", **ROW).status_code == 200
        assert _call(url, "DELETE", "/models/tiny", headers=AUTH).status_code == 200
        assert _call(url, "GET", "/models").json() == {"models": []}
        assert _call(url, "POST", "/predictions/tiny", **ROW).status_code == 404

        back = _call(url, "POST", "/models?url=tiny.mar&model_name=again", headers=AUTH)
        assert back.json() == {"status": 'Model "again" Version: 1.0 registered with 1 initial workers'}


@pytest.mark.torch
@pytest.mark.slow
def test_asynchronous_registration_answers_202_and_then_serves(store: Store, tmp_path: Path) -> None:
    with _modelport(store, tmp_path / "repo", "--model-control") as url:
        accepted = _call(url, "POST", "/models?url=tiny.mar&synchronous=false")
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"status": "Processing worker updates..."}
        synchronous = _call(url, "POST", "/models?url=tiny.mar&model_name=later&synchronous=true")
        assert synchronous.status_code == 200, "registrations run one at a time: the first one is done"
        assert _call(url, "POST", "/predictions/tiny", **ROW).status_code == 200


@pytest.mark.torch
@pytest.mark.slow
def test_an_archive_without_input_specs_takes_them_as_input_parameters(store: Store, tmp_path: Path) -> None:
    with _modelport(store, tmp_path / "repo", "--model-control") as url:
        refused = _call(url, "POST", "/models?url=plain.mar")
        assert refused.status_code == 400, refused.text
        assert refused.json()["type"] == "InvalidModelException"
        assert "register it with input=NAME:DTYPE:SHAPE in the query of HTTP" in refused.json()["message"], refused.text
        assert not (tmp_path / "repo" / "plain").exists() or not any((tmp_path / "repo" / "plain").glob("[0-9]*"))
        registered = _call(url, "POST", "/models?url=plain.mar&input=x:float32:-1x4")
        assert registered.json() == {"status": 'Model "plain" Version: 1.0 registered with 1 initial workers'}
        answer = _call(url, "POST", "/predictions/plain", json=[1.0, 2.0, 3.0, 4.0])
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 3, "the Linear(4, 3) model's one output row"


@pytest.mark.torch
@pytest.mark.slow
def test_registration_is_refused_without_model_control(store: Store, tmp_path: Path) -> None:
    with _modelport(store, tmp_path / "repo") as url:
        for method, path in [
            ("POST", "/models?url=tiny.mar"),
            ("PUT", "/models/x?min_worker=1"),
            ("DELETE", "/models/x"),
        ]:
            refused = _call(url, method, path)
            assert refused.status_code == 405, refused.text
            assert refused.json()["type"] == "MethodNotAllowedException"
            assert "--model-control" in refused.json()["message"]
        assert not (tmp_path / "repo" / "tiny").exists()


# every request both servers answer, in order; each is compared (TorchServe starts with first.mar served)
SEQUENCE = [
    ("POST", "/models?url=tiny.mar&initial_workers=1&synchronous=true&batch_size=4&max_batch_delay=50"),
    ("POST", "/models?url=tiny.mar&initial_workers=1&synchronous=true"),
    ("POST", "/models?url=tiny2.mar&initial_workers=1&synchronous=true"),
    ("POST", "/models?url=tiny.mar&model_name=other&synchronous=false&initial_workers=1"),
    ("POST", "/models?url=missing.mar"),
    ("POST", "/models?url=bad.mar"),
    ("POST", "/models"),
    ("POST", "/models?url=https://example.invalid/x.mar"),
    ("POST", "/models?url={store}/tiny.mar&model_name=abs"),
    ("GET", "/models?limit=1"),
    ("PUT", "/models/tiny?min_worker=2&synchronous=true"),
    ("PUT", "/models/tiny?min_worker=1&max_worker=1"),
    ("PUT", "/models/tiny/2.0?min_worker=1&synchronous=true"),
    ("PUT", "/models/nope?min_worker=1"),
    ("PUT", "/models/tiny/9.9?min_worker=1"),
    ("PUT", "/models/tiny?min_worker=3&max_worker=1"),
    ("PUT", "/models/tiny/2.0/set-default"),
    ("PUT", "/models/tiny/9.9/set-default"),
    ("PUT", "/models/nope/1.0/set-default"),
    ("GET", "/models/tiny"),
    ("DELETE", "/models/tiny/2.0"),
    ("DELETE", "/models/tiny/1.0"),
    ("DELETE", "/models/tiny/9.9"),
    ("DELETE", "/models/nope"),
    ("DELETE", "/models/tiny"),
    ("GET", "/models/tiny"),
]
_REWORDED = {  # TorchServe's message, then what modelport adds to it
    "DownloadArchiveException": "Failed to download archive from: https://example.invalid/x.mar",
    "InvalidModelException": "Model name is not defined.",
}


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_answers_match_a_real_torchserve(store: Store, tmp_path: Path) -> None:
    options = TorchServeOptions(batch_size=1, model_api=True)
    with contextlib.ExitStack() as stack:
        torchserve = stack.enter_context(running_torchserve(store.first, tmp_path / "ts", options)).management
        modelport = stack.enter_context(_modelport(store, tmp_path / "repo", "--model-control"))
        for method, template in SEQUENCE:
            path = template.format(store=store.folder)
            theirs, mine = _call(torchserve, method, path), _call(modelport, method, path)
            what = f"{method} {path}: TorchServe {theirs.status_code} {theirs.text}, modelport {mine.text}"
            assert mine.status_code == theirs.status_code, what
            expected, got = theirs.json(), mine.json()
            if isinstance(
                expected, list
            ):  # describe: the default version (2.0 by now), with the keys modelport fills in
                assert [v["modelVersion"] for v in expected] == ["2.0"], what
                assert [v["modelVersion"] for v in got] == ["2"], what
                assert all(got[0][k] == expected[0][k] for k in ("modelName", "minWorkers", "maxWorkers", "batchSize"))
                assert got[0].keys() == expected[0].keys(), what
                assert got[0]["workers"][0].keys() == expected[0]["workers"][0].keys(), what
                assert got[0]["jobQueueStatus"].keys() == expected[0]["jobQueueStatus"].keys(), what
            elif "models" in expected:  # a page: the same keys and token (TorchServe also serves first.mar)
                assert got.keys() == expected.keys() and got["nextPageToken"] == expected["nextPageToken"], what
            elif "code" in expected:
                assert {k: got[k] for k in ("code", "type")} == {k: expected[k] for k in ("code", "type")}, what
                assert got["message"].startswith(_REWORDED.get(expected["type"], expected["message"])), what
            else:
                assert got == expected, what


def test_pages_of_models_as_torchserve_pages_them() -> None:
    names = ["a", "b", "c"]
    assert model_page(names, {}) == {"models": [{"modelName": n, "modelUrl": n} for n in names]}
    assert model_page(names, {"limit": "2"})["nextPageToken"] == "2"
    assert model_page(names, {"limit": "2", "next_page_token": "2"}) == {
        "models": [{"modelName": "c", "modelUrl": "c"}]
    }
    assert model_page(names, {"limit": "1", "next_page_token": "2"})["nextPageToken"] == "3", "TorchServe's"
    assert len(model_page(names, {"limit": "500"})["models"]) == 3
    assert len(model_page(names, {"limit": "x", "next_page_token": "-4"})["models"]) == 3


def test_registration_parameters() -> None:
    request = registration({"url": "r.mar", "batch_size": "4", "max_batch_delay": "50", "synchronous": "false"})
    assert (request.batch_size, request.max_batch_delay_ms, request.synchronous) == (4, 50.0, False)
    assert registration({"url": "r.mar"}).synchronous, "TorchServe registers synchronously by default"
    for params, message in [
        ({}, "Parameter url is required."),
        ({"url": "r.mar", "batch_size": "abc"}, "batch_size must be an integer"),
        ({"url": "r.mar", "initial_workers": "0"}, "initial_workers must be at least 1"),
        ({"url": "r.mar", "handler": "image_classifier"}, "handler is not supported"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            registration(params)


def test_write_methods_on_models_need_the_control_token() -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert http_scope("/models", method) == "control"
        assert http_scope("/models/tiny/2.0/set-default", method) == "control"
    assert http_scope("/models", "GET") == "inference"
    assert http_scope("/models/tiny", "GET") == "inference"
    assert http_scope("/predictions/tiny", "POST") == "inference"
    assert http_scope("/models/tiny/invoke", "POST") == "inference", "SageMaker's prediction, not a registration"
