"""TorchServe differences left open by earlier rounds, each checked against a real TorchServe 0.12 serving the
same model store as ``modelport import-mar STORE --ts-config config.properties`` + ``modelport serve``.

The store (``torch-model-archiver``): ``show``, a module-level ``handle`` that answers what it got of each
request (every input's type and value); ``big``, one that answers as many bytes as the body asks for; ``odd``,
one that answers in the ways a handler may answer wrongly or unusually (not a list, values JSON cannot write,
per-row content type, status and headers, request headers read through ``context.request_processor``,
``context.manifest``). ``config.properties`` gives ``show`` a ``maxWorkers`` above its ``minWorkers`` and a
``maxBatchDelay`` with batches of one, ``big`` batches of two, and a small ``max_response_size``. Checked:
form-encoded bodies (``curl -d hi``: TorchServe hands the handler no input at all), SageMaker's ``/invocations``
without ``model_name`` while several models are served, responses over ``max_response_size``
(``--max-response-bytes``), describe's ``maxWorkers`` and ``maxBatchDelay``, importing or registering an
archive version twice, and (their own servers) ``service_envelope`` (``--service-envelope``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml

from modelport.cli import main
from modelport.exporters.mar_store import read_properties, serve_flags
from modelport.torchserve_process import TorchServeOptions, archive, running_torchserve
from tests.serving.handler_archives import SHOW_VALUE
from tests.serving.processes import serving

SHOW = (
    SHOW_VALUE
    + """

def handle(data, context):
    if data is None:
        return None
    return [{k: _show(v) for k, v in row.items()} for row in data]
"""
)

BIG = """
def handle(data, context):
    if data is None:
        return None
    return [b"x" * int(bytes(row.get("body") or b"1").decode()) for row in data]
"""

ODD = """
def handle(data, context):
    if data is None:
        return None
    kind = bytes(data[0].get("body") or b"").decode()
    n = len(data)
    if kind == "dict":
        return {"a": 1}
    if kind == "str":
        return "text"
    if kind == "bytes":
        return b"raw"
    if kind == "tuple":
        return tuple("t" for _ in data)
    if kind == "none":
        return None
    if kind == "empty":
        return []
    if kind == "np":
        import numpy
        return [numpy.arange(3) for _ in data]
    if kind == "npscalar":
        import numpy
        return [{"v": numpy.float32(1.5)} for _ in data]
    if kind == "nestedbytes":
        return [[1, {"b": b"x"}] for _ in data]
    if kind == "nulls":
        return [None for _ in data]
    if kind == "numbers":
        return [1.5 for _ in data]
    if kind == "header":
        for i in range(n):
            context.set_response_content_type(i, "text/csv")
            context.set_response_status(201, "Made", idx=i)
            context.set_response_header(i, "X-Extra", "yes")
        return ["a,b" for _ in data]
    if kind == "reqheader":
        processors = context.request_processor
        return [
            {
                "token": processors[i].get_request_property("x-token"),
                "other": processors[i].get_request_property("x-other"),
                "missing": processors[i].get_request_property("x-missing"),
            }
            for i in range(n)
        ]
    if kind == "manifest":
        model = context.manifest["model"]
        keys = ("serializedFile", "handler", "modelVersion", "modelName")
        return [{"model": {k: model.get(k) for k in keys}, "name": context.model_name} for _ in data]
    if kind == "raise":
        raise ValueError("boom")
    if kind == "status500":
        from ts.utils.util import PredictionException
        raise PredictionException("custom failure", 418)
    return [kind for _ in data]
"""

LIMIT = 1000  # max_response_size
MODELS = {
    "show": {"1.0": {"marName": "show.mar", "batchSize": 1, "maxBatchDelay": 50, "minWorkers": 1, "maxWorkers": 3}},
    "big": {"1.0": {"marName": "big.mar", "batchSize": 2, "maxBatchDelay": 20, "minWorkers": 1, "maxWorkers": 1}},
}
PROPERTIES = {
    "load_models": "show.mar,big.mar,odd.mar",
    "models": json.dumps(MODELS),
    "max_response_size": str(LIMIT),
}


class Servers(NamedTuple):
    torchserve: str
    management: str  # TorchServe's management API (modelport answers it on its one HTTP port)
    modelport: str
    store: Path
    repo: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("round4")
    store, repo, src = work / "store", work / "repo", work / "src"
    src.mkdir()
    (src / "w.bin").write_text("x")
    for name, code in (("show", SHOW), ("big", BIG), ("odd", ODD)):
        (src / f"{name}.py").write_text(code)
        archive(src / "w.bin", src / f"{name}.py", name, store)
    config = work / "config.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in PROPERTIES.items()))
    assert main(["import-mar", str(store), "--ts-config", str(config), "--repository", str(repo), "--quiet"]) == 0
    flags, _ = serve_flags(read_properties(config))
    limit = flags[flags.index("--max-response-bytes") :][:2]
    assert limit == ["--max-response-bytes", str(LIMIT)], "the import prints max_response_size as a serve flag"
    options = TorchServeOptions(properties=PROPERTIES, model_api=True, also=("big.mar", "odd.mar"))
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(store / "show.mar", work / "ts", options))
        mp = stack.enter_context(serving(repo, *limit, "--model-control", "--model-store", str(store)))
        yield Servers(ts.inference, ts.management, mp.url, store, repo)


def _answer(response: httpx.Response) -> tuple[int, Any]:
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.content


def _both(servers: Servers, method: str, path: str, **request: Any) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """The same request to TorchServe and to modelport: each one's status and (parsed) body."""
    torchserve, modelport = (
        _answer(httpx.request(method, base + path, timeout=60, **request))
        for base in (servers.torchserve, servers.modelport)
    )
    return torchserve, modelport


FORMS = [b"hi", b"a=1&b=2", b"a=1&a=2&body=z", b"", b"k=%C3%A9+x&j"]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("body", FORMS)
def test_a_form_encoded_body_reaches_the_handler_as_in_torchserve(servers: Servers, body: bytes) -> None:
    """``curl -d hi``: TorchServe decodes the form, drops fields without a value (``hi``: the handler gets ``{}``),
    keeps a repeated field's last value, and hands each value over as bytes."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    torchserve, modelport = _both(servers, "POST", "/predictions/show", content=body, headers=form)
    assert torchserve[0] == 200
    assert modelport == torchserve
    if body == b"hi":
        assert modelport[1] == {}


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_invocations_without_model_name_while_two_models_are_served(servers: Servers) -> None:
    torchserve, modelport = _both(servers, "POST", "/invocations", content=b"hi")
    assert torchserve == (
        400,
        {"code": 400, "type": "BadRequestException", "message": "Parameter model_name is required."},
    )
    assert modelport == torchserve
    named = _both(servers, "POST", "/invocations?model_name=show", content=b"hi")
    assert named[0] == named[1] == (200, {"model_name": ["bytes", "show"], "body": ["bytes", "hi"]})


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize(("size", "status"), [(LIMIT, 200), (LIMIT + 1, 500), (5 * LIMIT, 500)])
def test_a_response_over_max_response_size_fails_as_in_torchserve(servers: Servers, size: int, status: int) -> None:
    for path in ("/predictions/big", "/invocations?model_name=big"):
        torchserve, modelport = _both(servers, "POST", path, content=str(size).encode())
        assert torchserve[0] == status
        assert modelport == torchserve, path
        if status == 500:
            assert modelport[1] == {"code": 500, "type": "InternalServerException", "message": "Worker died."}
    after = _both(servers, "POST", "/predictions/big", content=b"3")
    assert after[0] == after[1] == (200, b"xxx"), "the model serves on"


SHOWN = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout")


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("model", ["show", "big"])
def test_describe_shows_the_configured_workers_and_batch_delay(servers: Servers, model: str) -> None:
    """TorchServe shows ``maxWorkers`` and ``maxBatchDelay`` as configured, a batch of one's delay too."""
    torchserve = httpx.get(f"{servers.management}/models/{model}", timeout=30).json()[0]
    modelport = httpx.get(f"{servers.modelport}/models/{model}", timeout=30).json()[0]
    assert {k: modelport[k] for k in SHOWN} == {k: torchserve[k] for k in SHOWN}
    assert torchserve["maxWorkers"] == MODELS[model]["1.0"]["maxWorkers"]
    assert torchserve["maxBatchDelay"] == MODELS[model]["1.0"]["maxBatchDelay"]
    assert len(modelport["workers"]) == len(torchserve["workers"]) == 1


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_an_archive_version_is_imported_or_registered_once(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TorchServe answers 409 to a second registration of ``show`` 1.0; ``import-mar`` refuses it the same way
    (it added a version and moved the ``1.0`` label to it, which the version policy did not serve)."""
    config = (servers.repo / "show" / "config.yaml").read_text()
    torchserve = _answer(httpx.post(f"{servers.management}/models?url=show.mar&synchronous=true", timeout=60))
    modelport = _answer(httpx.post(f"{servers.modelport}/models?url=show.mar&synchronous=true", timeout=60))
    conflict = {"code": 409, "type": "ConflictStatusException"}
    message = "Model version 1.0 is already registered for model show"
    assert torchserve == modelport == (409, {**conflict, "message": message})
    capsys.readouterr()
    again = main(["import-mar", str(servers.store / "show.mar"), "--repository", str(servers.repo), "--quiet"])
    assert again == 1
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (servers.repo / "show").iterdir()) == ["1", "config.yaml"]
    assert (servers.repo / "show" / "config.yaml").read_text() == config
    fresh = tmp_path / "repo"  # under another name it is a model of its own
    assert main(["import-mar", str(servers.store / "show.mar"), "--repository", str(fresh), "--quiet"]) == 0
    again = main(["import-mar", str(servers.store / "show.mar"), "--repository", str(fresh), "--name", "shown"])
    assert again == 0
    assert yaml.safe_load((fresh / "shown" / "config.yaml").read_text())["version_labels"] == {"1.0": 1}


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("query", ["min_worker=1&max_worker=2", "min_worker=1"])
def test_scaling_sets_the_max_workers_torchserve_describes(servers: Servers, query: str) -> None:
    """``PUT /models/m?min_worker=N&max_worker=M``: TorchServe's maxWorkers is M, else N."""
    for base in (servers.management, servers.modelport):
        scaled = httpx.put(f"{base}/models/big?{query}&synchronous=true", timeout=120)
        assert scaled.status_code == 200, scaled.text
    torchserve = httpx.get(f"{servers.management}/models/big", timeout=30).json()[0]
    modelport = httpx.get(f"{servers.modelport}/models/big", timeout=30).json()[0]
    assert {k: modelport[k] for k in SHOWN} == {k: torchserve[k] for k in SHOWN}
    assert modelport["maxWorkers"] == (2 if "max_worker" in query else 1)


SHOW_ROWS = """
def _show(value):
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", bytes(value).decode("latin-1")]
    if isinstance(value, dict):
        return {str(k): _show(v) for k, v in value.items()}
    return [type(value).__name__, value]


def handle(data, context):
    if data is None:
        return None
    return [_show(row) for row in data]
"""

V2 = {"id": "1", "inputs": [{"name": "in", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
ENVELOPED = [
    ("json", {"json": {"instances": [{"a": 1}, {"b": [1, 2]}]}}),
    ("json", {"json": {"instances": [{"b64": "aGk="}]}}),
    ("json", {"content": b"hi"}),
    ("json", {"json": {"x": 1}}),
    ("json", {"files": {"data": ("a.json", b'{"instances": [1]}', "application/json")}}),
    ("kservev2", {"json": V2}),
    ("kservev2", {"json": {"instances": [1]}}),
]


@pytest.fixture(scope="module")
def enveloped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str]]]:
    """For each envelope, a TorchServe with ``service_envelope`` and the modelport serving its import: ``rows``
    (threads) and ``rowsw`` (a worker process) answer what the handler got of each row."""
    work = tmp_path_factory.mktemp("envelopes")
    src, store = work / "src", work / "store"
    src.mkdir()
    (src / "w.bin").write_text("x")
    (src / "rows.py").write_text(SHOW_ROWS)
    for name in ("rows", "rowsw"):
        archive(src / "w.bin", src / "rows.py", name, store)
    urls = {}
    with contextlib.ExitStack() as stack:
        for envelope in ("json", "kservev2"):
            properties = {"service_envelope": envelope, "load_models": "rows.mar,rowsw.mar"}
            config = work / f"{envelope}.properties"
            config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
            repo = work / f"repo-{envelope}"
            assert (
                main(["import-mar", str(store), "--ts-config", str(config), "--repository", str(repo), "--quiet"]) == 0
            )
            (repo / "rowsw" / "config.yaml").write_text((repo / "rowsw" / "config.yaml").read_text() + "workers: 1\n")
            flags, _ = serve_flags(read_properties(config))
            assert flags[flags.index("--service-envelope") + 1] == envelope
            options = TorchServeOptions(properties=properties, batch_size=1, also=("rowsw.mar",))
            ts = stack.enter_context(running_torchserve(store / "rows.mar", work / f"ts-{envelope}", options))
            mp = stack.enter_context(serving(repo, "--service-envelope", envelope))
            urls[envelope] = (ts.inference, mp.url)
        yield urls


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize(("envelope", "request_"), ENVELOPED)
def test_service_envelope_wraps_handlers_as_in_torchserve(
    enveloped: dict[str, tuple[str, str]], envelope: str, request_: dict[str, Any]
) -> None:
    """``service_envelope`` in config.properties (``--service-envelope``): TorchServe's request envelope unpacks
    each request for the handler and packs its answers (``{"instances": [...]}`` -> ``{"predictions": [...]}``;
    a KServe v2 request -> a v2 response); a request the envelope cannot read fails, 503 ``Prediction failed``."""
    torchserve_url, modelport_url = enveloped[envelope]
    for model in ("rows", "rowsw"):
        torchserve = _answer(httpx.post(f"{torchserve_url}/predictions/{model}", timeout=60, **request_))
        modelport = _answer(httpx.post(f"{modelport_url}/predictions/{model}", timeout=60, **request_))
        assert modelport == torchserve, model
        if "instances" in request_.get("json", {}) and envelope == "json":
            assert torchserve[0] == 200 and "predictions" in torchserve[1]


ODD_KINDS = ["dict", "str", "bytes", "tuple", "none", "empty", "np", "npscalar", "nestedbytes", "nulls", "numbers"]
ODD_KINDS += ["header", "reqheader", "manifest", "raise", "status500", "plain"]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("kind", ODD_KINDS)
def test_a_handlers_unusual_answers_reach_the_client_as_from_torchserve(servers: Servers, kind: str) -> None:
    """A ``handle`` that returns a dict, str, bytes, tuple or None (503 ``Invalid model predict output``), too few
    responses, numpy values (503 ``Unsupported model output data type.``), sets a row's content type, status and
    header, reads request headers through ``request_processor``, or raises: status, body and headers as TorchServe's."""
    headers = {"x-token": "t1", "x-other": "o"}  # (names as sent: TorchServe keeps their case, ASGI lowers them)
    answers = []
    for base in (servers.torchserve, servers.modelport):
        answer = httpx.post(f"{base}/predictions/odd", content=kind.encode(), headers=headers, timeout=60)
        shown = {k.lower(): v for k, v in answer.headers.items() if k.lower() in ("content-type", "x-extra")}
        answers.append((*_answer(answer), shown))
    assert answers[1] == answers[0]


@pytest.fixture(scope="module")
def undecoded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """TorchServe with ``decode_input_request=false`` and the modelport serving its import (the flag it prints)."""
    work = tmp_path_factory.mktemp("undecoded")
    src, store = work / "src", work / "store"
    src.mkdir()
    (src / "w.bin").write_text("x")
    (src / "show.py").write_text(SHOW)
    archive(src / "w.bin", src / "show.py", "show", store)
    properties = {"decode_input_request": "false", "load_models": "show.mar"}
    config = work / "config.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    repo = work / "repo"
    assert main(["import-mar", str(store), "--ts-config", str(config), "--repository", str(repo), "--quiet"]) == 0
    flags, _ = serve_flags(read_properties(config))
    assert "--no-decode-input-request" in flags
    options = TorchServeOptions(properties=properties, batch_size=1)
    with (
        running_torchserve(store / "show.mar", work / "ts", options) as ts,
        serving(repo, "--no-decode-input-request") as mp,
    ):
        yield ts.inference, mp.url


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/plain"]
CONTENT_TYPES += ["text/plain; charset=latin-1", "TEXT/csv", "application/x-ndjson", "image/png", ""]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("decode", [True, False])
def test_inputs_are_decoded_by_their_content_type_as_in_torchserve(
    servers: Servers, undecoded: tuple[str, str], decode: bool
) -> None:
    """TorchServe's worker parses ``application/json`` and decodes ``text...`` (the media type as the client wrote
    it: ``Application/JSON`` and ``TEXT/csv`` stay bytes; parameters dropped), in the body and in multipart parts;
    with ``decode_input_request=false`` (``--no-decode-input-request``) every input stays bytes."""
    torchserve_url, modelport_url = (servers.torchserve, servers.modelport) if decode else undecoded
    requests: list[dict[str, Any]] = [
        {"content": body, "headers": {"content-type": content_type} if content_type else {}}
        for content_type in CONTENT_TYPES
        for body in (b'{"a": 1}', "h\u00e9".encode("latin-1"))
    ]
    parts = {"a": ("a.json", b'{"x": 1}', "application/json; charset=utf-8"), "b": ("b.txt", b"hi", "text/plain")}
    requests.append({"files": {**parts, "c": ("c", b"zz", "")}})
    for request in requests:
        torchserve = _answer(httpx.post(f"{torchserve_url}/predictions/show", timeout=60, **request))
        modelport = _answer(httpx.post(f"{modelport_url}/predictions/show", timeout=60, **request))
        assert modelport == torchserve, request
    parsed = _answer(httpx.post(f"{modelport_url}/predictions/show", json={"a": 1}, timeout=60))
    assert parsed == (200, {"body": ["dict", {"a": 1}] if decode else ["bytes", '{"a":1}']})


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("query", ["initial_workers=1", "initial_workers=2&batch_size=2&max_batch_delay=30"])
def test_a_registered_version_is_described_as_torchserve_describes_it(servers: Servers, query: str) -> None:
    """``POST /models?url=...``: TorchServe's defaults (``max_batch_delay`` 100) and ``initial_workers`` as
    ``minWorkers`` and ``maxWorkers``."""
    path = f"/models?url=big.mar&model_name=again&synchronous=true&{query}"
    for base in (servers.management, servers.modelport):
        registered = httpx.post(base + path, timeout=180)
        assert registered.status_code == 200, registered.text
    try:
        torchserve = httpx.get(f"{servers.management}/models/again", timeout=30).json()[0]
        modelport = httpx.get(f"{servers.modelport}/models/again", timeout=30).json()[0]
        assert {k: modelport[k] for k in SHOWN} == {k: torchserve[k] for k in SHOWN}
    finally:
        for base in (servers.management, servers.modelport):
            httpx.delete(f"{base}/models/again", timeout=120)
