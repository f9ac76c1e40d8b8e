"""Handlers that use more of TorchServe's handler API answer the same in modelport as in a real TorchServe 0.12.

The archives of ``tests/serving/handler_archives.py``, served by one TorchServe and by one ``modelport serve`` of
the imported repository: the context the handler sees, its answers while it emits custom metrics, and
``GET /models/m?customized=true`` (the handler's ``describe_handle``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from modelport.cli import main
from modelport.torchserve_process import TorchServeOptions, running_torchserve
from tests.serving.handler_archives import build_archives
from tests.serving.processes import serving

pytestmark = [pytest.mark.torchserve, pytest.mark.torch, pytest.mark.slow]


class Servers(NamedTuple):
    torchserve: str
    management: str
    modelport: str
    log: Path  # modelport's


WORKERS = {"threads": "ctx", "worker process": "ctx-workers"}  # the name modelport serves ctx by


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("handler-api")
    mars = build_archives(work)
    repo = work / "repo"
    for mar in mars:
        assert main(["import-mar", str(mar), "--repository", str(repo), "--quiet"]) == 0
    command = ["import-mar", str(mars[0]), "--repository", str(repo), "--name", "ctx-workers", "--quiet"]
    assert main(command) == 0
    config = repo / "ctx-workers" / "config.yaml"
    config.write_text(config.read_text() + "workers: 1\n")
    options = TorchServeOptions(batch_size=1, also=tuple(m.name for m in mars[1:]))
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mars[0], work / "ts", options))
        mp = stack.enter_context(serving(repo, log=work / "server.log", ports=(0, -1)))
        yield Servers(ts.inference, ts.management, mp.url, work / "server.log")


def _both(servers: Servers, model: str, mine: str = "", **request: Any) -> tuple[httpx.Response, httpx.Response]:
    """``mine``: the name modelport serves ``model`` by, if another."""
    theirs = httpx.post(f"{servers.torchserve}/predictions/{model}", timeout=60, **request)
    return theirs, httpx.post(f"{servers.modelport}/predictions/{mine or model}", timeout=60, **request)


@pytest.mark.parametrize("mine", WORKERS.values(), ids=WORKERS.keys())
def test_the_handler_sees_the_context_as_in_torchserve(servers: Servers, mine: str) -> None:
    """system_properties (server_version: TorchServe's), the manifest, model_yaml_config, extra files in a
    subfolder, the ts utilities, request ids and headers. Header names: TorchServe passes them as the client
    sent them; modelport gets them lower case (ASGI) and passes each both lower case and capitalized."""
    theirs, answer = _both(servers, "ctx", mine, content=b"ctx", headers={"X-Custom": "abc"})
    assert (theirs.status_code, answer.status_code) == (200, 200), (theirs.text, answer.text)
    expected, got = theirs.json(), answer.json()
    expected["model_name"] = mine  # the name it is served by (TorchServe's: the registered name)
    assert expected["all_headers"] == {"X-Custom": "abc"}
    assert got.pop("all_headers") == {"X-Custom": "abc", "x-custom": "abc"}
    del expected["all_headers"]
    assert got == expected
    assert expected["properties"]["server_version"] == "0.12.0"
    assert expected["yaml"]["handler"] == {"threshold": 0.4, "max_length": 16}
    assert answer.headers["content-type"] == theirs.headers["content-type"] == "application/json"


REQUESTS = {
    "JSON": {"json": {"x": [1, 2, 3, 4]}},
    "multipart JSON file": {"files": {"data": ("x.json", b'{"x": [0, 1, 0, 1]}', "application/json")}},
    "wrong shape": {"json": {"x": [1, 2, 3]}},
}


@pytest.mark.parametrize("name", WORKERS.values(), ids=WORKERS.keys())
@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
def test_a_handler_that_emits_metrics_answers_as_in_torchserve(
    servers: Servers, request_: dict[str, Any], name: str
) -> None:
    """Every metrics call of ``preprocess`` runs; the values go to the log, as TorchServe's worker logs them."""
    theirs, mine = _both(servers, "ctx", name, **request_)
    assert theirs.status_code == (503 if "x" in request_.get("json", {}) and len(request_["json"]["x"]) != 4 else 200)
    assert mine.status_code == theirs.status_code, (theirs.text, mine.text)
    assert mine.json() == theirs.json()
    if mine.status_code == 200:  # in the server's log, from its worker process too
        assert f"[METRICS]Preprocessed.Count:1|#Stage:pre,ModelName:{name},Level:Model" in servers.log.read_text()


@pytest.mark.parametrize("model", ["ctx", "basic", "fn", "text", "listing"])
@pytest.mark.parametrize("customized", [True, False])
def test_describe_shows_the_handlers_customized_metadata_as_in_torchserve(
    servers: Servers, model: str, customized: bool
) -> None:
    """``GET /models/m?customized=true``: ``customizedMetadata`` is the handler's answer to a describe request."""
    query = "?customized=true" if customized else ""
    theirs = httpx.get(f"{servers.management}/models/{model}{query}", timeout=60)
    mine = httpx.get(f"{servers.modelport}/models/{model}{query}", timeout=60)
    assert (theirs.status_code, mine.status_code) == (200, 200), (theirs.text, mine.text)
    expected, got = theirs.json()[0], mine.json()[0]
    assert ("customizedMetadata" in got) == ("customizedMetadata" in expected) == customized, (expected, got)
    assert got.get("customizedMetadata") == expected.get("customizedMetadata")
    assert got["batchSize"] == expected["batchSize"]


def test_a_handler_in_a_worker_process_describes_itself_as_in_torchserve(servers: Servers) -> None:
    theirs = httpx.get(f"{servers.management}/models/ctx?customized=true", timeout=60)
    mine = httpx.get(f"{servers.modelport}/models/ctx-workers?customized=true", timeout=60)
    assert (theirs.status_code, mine.status_code) == (200, 200), (theirs.text, mine.text)
    assert (
        mine.json()[0]["customizedMetadata"]
        == theirs.json()[0]["customizedMetadata"]
        == {"labels": 3, "threshold": 0.4}
    )
