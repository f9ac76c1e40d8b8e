"""A whole TorchServe deployment (a model store and its ``config.properties``) answers the same in modelport
(``import-mar STORE --ts-config config.properties`` + ``serve``) as in a real TorchServe 0.12 serving it.

The store, built with ``torch-model-archiver``: two versions of one model (``m_v1.mar`` ``--version 1.0`` and
``m_v2.mar`` ``--version 2.0``: a module-level ``handle`` that describes each request and names its version), the
same handler as ``--archive-format tgz``, ``no-archive`` and ``zip-store``, a ``module:function`` entry point
(``--handler my_handler:entry``), a handler that imports sibling modules shipped with ``--extra-files`` (a module
and a package), and an archive with ``--runtime python3`` and ``--requirements-file``. ``config.properties`` loads
them all and gives ``m`` 1.0 its batch size, batch delay and response timeout in ``models``; ``max_request_size``
is small. Each request goes to both servers, in order (management writes included), and the answers must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import pytest
import yaml

from modelport.cli import main
from modelport.exporters.mar_store import read_properties, serve_flags, store_archives
from modelport.serving.torchserve_grpc import SERVICE, messages
from modelport.torchserve_process import BIN, TorchServeOptions, TorchServePorts, running_torchserve
from tests.serving.handler_archives import SHOW_VALUE
from tests.serving.processes import serving

HANDLER = (
    '\nVERSION = "{version}"\n'
    + SHOW_VALUE
    + """

def handle(data, context):
    if data is None:
        return None
    if data[0].get("body") in (b"short", bytearray(b"short")):  # fewer responses than requests
        return [{{"n": len(data)}}][: len(data) - 1]
    batch = context.system_properties["batch_size"]
    return [{{"version": VERSION, "row": {{k: _show(v) for k, v in row.items()}}, "batch": batch}} for row in data]
"""
)

ENTRY = """
def entry(data, context):
    return None if data is None else [{"entry": True, "n": len(data)} for _ in data]


def handle(data, context):
    return [{"entry": False} for _ in data or []]
"""

PACKAGED = """
from helper import shout
from helpers import SUFFIX


def handle(data, context):
    if data is None:
        return None
    return [shout(bytes(row.get("body") or b"").decode()) + SUFFIX for row in data]
"""

MODELS = {"m": {"1.0": {"marName": "m_v1.mar", "batchSize": 4, "maxBatchDelay": 200, "responseTimeout": 90}}}
PROPERTIES = {
    "load_models": "all",
    "models": json.dumps(MODELS),
    "default_response_timeout": "33",
    "max_request_size": "4000",
    "enable_model_api": "true",
}


class Servers(NamedTuple):
    torchserve: str
    management: str  # TorchServe's management API (modelport answers it on its one HTTP port)
    modelport: str
    repo: Path
    grpc: tuple[str, str]  # TorchServe's gRPC inference address, modelport's gRPC address


def _archive(store: Path, name: str, version: str, handler: Path, *flags: str) -> None:
    command = [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", version, "--force"]
    command += ["--serialized-file", str(handler.parent / "w.bin"), "--handler", str(handler), *flags]
    staging = handler.parent.parent / "archiver-tmp"  # (it stages in $TMPDIR/<name>: a private one, for xdist)
    staging.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(staging)}
    command += ["--export-path", str(store)]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr.decode()


def _store(work: Path) -> Path:
    src, store, staging = work / "src", work / "store", work / "staging"
    for folder in (src / "pkg" / "helpers", store, staging):
        folder.mkdir(parents=True)
    files = {"w.bin": "x", "m1.py": HANDLER.format(version="1.0"), "m2.py": HANDLER.format(version="2.0")}
    files |= {"my_handler.py": ENTRY, "packaged.py": PACKAGED, "requirements.txt": "numpy\n"}
    files |= {
        "pkg/helper.py": "def shout(text):\n    return text.upper()\n",
        "pkg/helpers/__init__.py": "SUFFIX = '!'\n",
    }
    for name, text in files.items():
        (src / name).write_text(text)
    for version, handler in (("1.0", "m1.py"), ("2.0", "m2.py")):  # two versions of m, in files of their own
        _archive(staging, "m", version, src / handler)
        (staging / "m.mar").rename(store / f"m_v{version[0]}.mar")
    for name, archive_format in (("tg", "tgz"), ("na", "no-archive"), ("zs", "zip-store")):
        _archive(store, name, "1.0", src / "m1.py", "--archive-format", archive_format)
    _archive(store, "ep", "1.0", src / "my_handler:entry")
    _archive(store, "pk", "1.0", src / "packaged.py", "--extra-files", str(src / "pkg"))
    _archive(
        store, "p3", "1.0", src / "m1.py", "--runtime", "python3", "--requirements-file", str(src / "requirements.txt")
    )
    return store


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("deployment")
    store, repo = _store(work), work / "repo"
    config = work / "config.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in PROPERTIES.items()))
    assert main(["import-mar", str(store), "--ts-config", str(config), "--repository", str(repo), "--quiet"]) == 0
    flags, _ = serve_flags(read_properties(config))  # (on free ports here: the size limit and --model-control)
    flags = [*flags[flags.index("--max-body-bytes") :][:2], *flags[-1:]]
    assert flags == ["--max-body-bytes", "4000", "--model-control"]
    # --runtime python3: TorchServe starts the worker with the python3 on PATH (it must have TorchServe's ts)
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    names = ("m", "tg", "na", "zs", "ep", "pk", "p3")
    ports = TorchServePorts.free()
    options = TorchServeOptions(properties=PROPERTIES, ready=names, env=env, ports=ports)
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(store / "m_v1.mar", work / "ts", options))
        mp = stack.enter_context(serving(repo, *flags, log=work / "server.log"))
        yield Servers(ts.inference, ts.management, mp.url, repo, (f"127.0.0.1:{ports.grpc_inference}", mp.grpc))


GRPC_PREDICTIONS = [("m", ""), ("m", "1.0"), ("m", "2.0"), ("m", "3.0"), ("pk", ""), ("ep", "1.0")]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize(("model", "version"), GRPC_PREDICTIONS)
def test_grpc_predictions_name_the_versions_as_torchserve(servers: Servers, model: str, version: str) -> None:
    """TorchServe's gRPC inference API (its port 7070; modelport's one gRPC port): the same prediction, or the same
    status and details, for the default version, each archive version and one that is not there."""
    request = REQUEST(model_name=model, model_version=version, input={"body": b"hi"})
    answers = []
    for address in servers.grpc:
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/Predictions",
                request_serializer=REQUEST.SerializeToString,
                response_deserializer=RESPONSE.FromString,
            )
            try:
                answers.append((grpc.StatusCode.OK, call(request, timeout=120).prediction))
            except grpc.RpcError as exc:
                answers.append((exc.code(), exc.details()))
    assert [_json(a) for a in answers[1]] == [_json(a) for a in answers[0]]


def _json(value: Any) -> Any:
    """JSON parsed (the same JSON, however indented), else as it is."""
    try:
        return json.loads(value) if isinstance(value, bytes) else value
    except ValueError:
        return value


MESSAGES = messages()
REQUEST, RESPONSE = MESSAGES["PredictionsRequest"], MESSAGES["PredictionResponse"]
JSON = {"content-type": "application/json"}
# (method, path, request): each sent to TorchServe's inference API (management API: paths under /models)
SEQUENCE: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/predictions/m", {"content": b"hello"}),
    ("POST", "/predictions/m/1.0", {"content": b"hello"}),
    ("POST", "/predictions/m/2.0", {"content": b"hello"}),
    ("POST", "/predictions/m/3.0", {"content": b"hello"}),
    ("POST", "/predictions/m?a=1&b=two", {"content": b"query"}),
    ("POST", "/predictions/m", {"content": b"[1, 2, 3]", "headers": JSON}),
    ("POST", "/predictions/m", {"content": b'[{"x": 1}, {"x": 2}]', "headers": JSON}),
    ("POST", "/predictions/m", {"content": "plain", "headers": {"content-type": "text/plain"}}),
    ("POST", "/predictions/m", {"content": b""}),
    ("POST", "/predictions/m", {"content": b"x" * 5000}),
    ("POST", "/predictions/m/1.0", {"content": b"short"}),
    *(("POST", f"/predictions/{name}", {"content": b"hi"}) for name in ("tg", "na", "zs", "ep", "pk", "p3")),
    # TorchServe's legacy and SageMaker routes: the query parameters reach the handler (not on /predictions)
    ("POST", "/m/predict?a=1&b=two", {"content": b"hi"}),
    ("GET", "/m/predict?a=1&data=x", {}),
    ("PUT", "/m/2.0/predict?a=1", {"content": b"hi"}),
    ("DELETE", "/m/predict?a=1", {}),
    ("POST", "/m/predict?a=1&a=2", {"content": b'{"x": 1}', "headers": JSON}),
    ("POST", "/m/predict?body=q", {"content": b"hi"}),
    ("POST", "/m/predict?data=q", {"files": {"data": ("x", b"hi", "text/plain")}}),
    ("POST", "/m/x/predict", {"content": b"hi"}),
    ("POST", "/nope/predict", {"content": b"hi"}),
    ("POST", "/invocations", {"content": b"hi"}),
    ("POST", "/invocations?model_name=m&a=1", {"content": b"hi"}),
    ("POST", "/invocations?model_name=nope", {"content": b"hi"}),
    ("POST", "/models/m/invoke?a=1", {"content": b"hi"}),
    ("POST", "/models/nope/invoke", {"content": b"hi"}),
    ("GET", "/models", {}),  # modelUrl: the default version's archive
    ("PUT", "/models/m/2.0/set-default", {}),
    ("POST", "/predictions/m", {"content": b"hello"}),
    ("GET", "/models?limit=3", {}),
    ("PUT", "/models/m/9.0/set-default", {}),
    ("DELETE", "/models/m/2.0", {}),
    ("PUT", "/models/m/1.0/set-default", {}),
    ("DELETE", "/models/m/2.0", {}),
    ("POST", "/predictions/m", {"content": b"hello"}),
    ("POST", "/predictions/m/2.0", {"content": b"hello"}),
]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_a_model_store_answers_as_torchserve_serving_it(servers: Servers) -> None:
    config = yaml.safe_load((servers.repo / "m" / "config.yaml").read_text())
    assert config["version_policy"] == {"specific": [1, 2]}, "every version stays served, as in TorchServe"
    assert config["default_version"] == 1 and config["version_labels"] == {"1.0": 1, "2.0": 2}
    assert (config["timeout_ms"], config["max_queue_delay_ms"]) == (90_000, 200)
    for method, path, request in SEQUENCE:
        management = path.startswith("/models") and "/invoke" not in path
        theirs_base = servers.management if management else servers.torchserve
        theirs = httpx.request(method, theirs_base + path, timeout=120, **request)
        mine = httpx.request(method, servers.modelport + path, timeout=120, **request)
        what = f"{method} {path}: TorchServe {theirs.status_code} {theirs.text!r}, modelport {mine.text!r}"
        assert mine.status_code == theirs.status_code, what
        assert (_parsed(mine), mine.headers.get("content-type")) == (
            _parsed(theirs),
            theirs.headers.get("content-type"),
        ), what


def _parsed(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.content


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_every_version_is_described_with_the_settings_torchserve_serves_it_by(servers: Servers) -> None:
    keys = ("modelName", "modelUrl", "runtime", "batchSize", "maxBatchDelay", "responseTimeout", "minWorkers")
    for model in ("tg", "na", "zs", "p3"):  # the archive's file (or folder) and its runtime (p3: python3)
        theirs = httpx.get(f"{servers.management}/models/{model}", timeout=60).json()
        mine = httpx.get(f"{servers.modelport}/models/{model}", timeout=60).json()
        assert [{k: v[k] for k in keys} for v in mine] == [{k: v[k] for k in keys} for v in theirs]
    theirs = httpx.get(f"{servers.management}/models/m/all", timeout=60).json()
    mine = httpx.get(f"{servers.modelport}/models/m/all", timeout=60).json()
    assert [v["modelVersion"] for v in theirs] == ["1.0", *(["2.0"] if len(theirs) > 1 else [])]
    assert [v["modelVersion"] for v in mine] == [str(i + 1) for i in range(len(theirs))]
    assert [{k: v[k] for k in keys} for v in mine[:1]] == [{k: v[k] for k in keys} for v in theirs[:1]]


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_a_batch_answered_with_fewer_responses_fails_as_in_torchserve(servers: Servers) -> None:
    async def together(url: str) -> list[httpx.Response]:  # one batch of up to four rows, or several
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{url}/predictions/m/1.0", content=b"short") for _ in range(4)))

    for answers in (asyncio.run(together(servers.torchserve)), asyncio.run(together(servers.modelport))):
        assert [(a.status_code, a.json()) for a in answers] == [(503, MISMATCH)] * 4


MISMATCH = {"code": 503, "type": "InternalServerException", "message": "number of batch response mismatched"}


def test_config_properties_are_read_as_torchserve_reads_them(tmp_path: Path) -> None:
    config = tmp_path / "config.properties"
    config.write_text(
        "# comment\ninference_address=http://0.0.0.0:8080\nmax_request_size: 9000\n"
        'models={"m": {"1.0": \\\n  {"batchSize": 2}}}\nload_models=x=m_v1.mar, m_v2.mar\n'
    )
    properties = read_properties(config)
    assert properties["models"] == '{"m": {"1.0": {"batchSize": 2}}}'
    assert serve_flags(properties)[0] == [
        *("--host", "0.0.0.0", "--http-port", "8080", "--max-body-bytes", "9000"),
        *("--max-response-bytes", "6553500", "--grpc-port", "7070"),
    ]
    assert serve_flags({})[0] == [
        *("--host", "127.0.0.1", "--http-port", "8080", "--max-body-bytes", "6553500"),
        *("--max-response-bytes", "6553500", "--grpc-port", "7070"),
    ], "TorchServe's defaults"
    store = tmp_path / "store"
    store.mkdir()
    for file, version in (("m_v1.mar", "1.0"), ("m_v2.mar", "2.0")):
        manifest = {"model": {"modelName": "m", "modelVersion": version, "handler": "h.py"}}
        with zipfile.ZipFile(store / file, "w") as archive:
            archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
    found = store_archives(store, properties)
    assert [(a.path.name, a.model, a.archive.version, a.settings) for a in found] == [
        ("m_v1.mar", "x", "1.0", {}),  # load_models name=file names the model
        ("m_v2.mar", "m", "2.0", {}),
    ]
    assert [a.settings for a in store_archives(store, {**properties, "load_models": "all"})] == [{"batchSize": 2}, {}]


def _zip(path: Path, manifest: dict[str, str], files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"runtime": "python", "model": manifest}))
        for name, text in files.items():
            archive.writestr(name, text)


def test_an_archive_that_fails_to_import_leaves_the_others_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, repo = tmp_path / "store", tmp_path / "repo"
    store.mkdir()
    handler = {"h.py": "def handle(data, context):\n    return None if data is None else ['ok' for _ in data]\n"}
    for file, version in (("a_v1.mar", "1.0"), ("z_v2.mar", "2.0")):  # a and z: the broken one is loaded between
        _zip(
            store / file, {"modelName": "a", "modelVersion": version, "handler": "h.py", "serializedFile": ""}, handler
        )
    broken = {"modelName": "broken", "modelVersion": "1.0", "serializedFile": "w.pt", "handler": "nowhere.py"}
    _zip(store / "broken.mar", broken, {"w.pt": "not a model"})
    assert main(["import-mar", str(store), "--repository", str(repo), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "broken.mar: " in out and "neither TorchScript nor ONNX" in out, out
    config = yaml.safe_load((repo / "a" / "config.yaml").read_text())
    assert config["version_policy"] == {"specific": [1, 2]} and config["default_version"] == 1
    assert config["timeout_ms"] == 120_000, "TorchServe's default responseTimeout (default_response_timeout)"
    assert not (repo / "broken").exists() or not any((repo / "broken").glob("[0-9]*"))


def test_the_model_store_may_be_the_one_config_properties_names(tmp_path: Path) -> None:
    store, repo = tmp_path / "store", tmp_path / "repo"
    store.mkdir()
    handler = {"h.py": "def handle(data, context):\n    return None if data is None else ['ok' for _ in data]\n"}
    _zip(store / "m.mar", {"modelName": "m", "modelVersion": "1.0", "handler": "h.py", "serializedFile": ""}, handler)
    config = tmp_path / "config.properties"
    config.write_text(f"model_store={store}\nload_models=m.mar\n")
    assert main(["import-mar", "--ts-config", str(config), "--repository", str(repo), "--quiet"]) == 0
    assert (repo / "m" / "1" / "h.py").is_file()
    assert main(["import-mar", "--repository", str(repo), "--quiet"]) == 2, "no archive, no model_store: refused"


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_a_torchserve_snapshot_is_imported_as_torchserve_restarts_from_it(tmp_path: Path) -> None:
    """A deployment changed through the management API (a default version set, workers scaled, an archive
    registered with its batch size) lives in TorchServe's config snapshot (``logs/config/*-snapshot.cfg``, its
    ``model_snapshot``), which TorchServe restarts from: imported with ``--ts-config SNAPSHOT``, modelport serves
    what the restarted TorchServe serves (its default version, its batch sizes)."""
    store, env = _store(tmp_path), {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    loaded = {"load_models": "m_v1.mar,m_v2.mar", "enable_model_api": "true"}
    first = TorchServeOptions(properties=loaded, ready=("m",), env=env, snapshots=True)
    with running_torchserve(store / "m_v1.mar", tmp_path / "ts", first) as ts:
        for method, path in [
            ("PUT", "/models/m/2.0/set-default"),
            ("PUT", "/models/m/1.0?min_worker=2&synchronous=true"),
            ("POST", "/models?url=pk.mar&initial_workers=1&synchronous=true&batch_size=3&max_batch_delay=40"),
        ]:
            assert httpx.request(method, ts.management + path, timeout=120).status_code == 200
    snapshot = max((tmp_path / "ts").rglob("*-snapshot.cfg"), key=lambda p: p.name)  # (named by the time)
    properties = read_properties(snapshot)
    repo = tmp_path / "repo"
    assert main(["import-mar", str(store), "--ts-config", str(snapshot), "--repository", str(repo), "--quiet"]) == 0
    snapshot_only = {"model_snapshot": properties["model_snapshot"].replace("\n", "\\n"), "load_models": "m_v1.mar"}
    restarted = TorchServeOptions(properties=snapshot_only, ready=("m", "pk"), env=env)
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(store / "m_v1.mar", tmp_path / "ts2", restarted))
        mp = stack.enter_context(serving(repo, log=tmp_path / "server.log", ports=(0, -1)))
        for path in ("/predictions/m", "/predictions/m/1.0", "/predictions/pk"):
            theirs = httpx.post(ts.inference + path, content=b"hi", timeout=120)
            mine = httpx.post(mp.url + path, content=b"hi", timeout=120)
            assert (mine.status_code, _parsed(mine)) == (theirs.status_code, _parsed(theirs)), path
        for path in ("/models/m/all", "/models/pk"):
            theirs, mine = (httpx.get(url + path, timeout=60).json() for url in (ts.management, mp.url))
            assert [_settings(v) for v in mine] == [_settings(v) for v in theirs], path
        assert httpx.post(ts.inference + "/predictions/m", content=b"hi").json()["version"] == "2.0"


def _settings(described: dict[str, Any]) -> dict[str, Any]:
    """What a description says of how a version is served."""
    keys = ["modelName", "modelUrl", "batchSize", "maxBatchDelay", "responseTimeout"]
    return {k: described[k] for k in keys}


async def test_sagemakers_invocations_serve_the_one_model_without_model_name(tmp_path: Path) -> None:
    """``POST /invocations`` names no model when the server serves one (SageMaker's single-model endpoint, as
    TorchServe answers it), with the query parameters as the handler's fields; two models: TorchServe's 400."""
    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    store, repo = tmp_path / "store", tmp_path / "repo"
    store.mkdir()
    handler = {"h.py": "def handle(data, context):\n    return None if data is None else [sorted(r) for r in data]\n"}
    _zip(store / "m.mar", {"modelName": "m", "modelVersion": "1.0", "handler": "h.py", "serializedFile": ""}, handler)
    assert main(["import-mar", str(store), "--repository", str(repo), "--quiet"]) == 0
    plane = build(ServerSettings(repository=repo))
    await plane.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(plane)), base_url="http://t") as c:
            answer = await c.post("/invocations?a=1", content=b"x")
            assert (answer.status_code, answer.json()) == (200, ["a", "body"])
            _zip(tmp_path / "other.mar", {"modelName": "other", "handler": "h.py", "serializedFile": ""}, handler)
            assert main(["import-mar", str(tmp_path / "other.mar"), "--repository", str(repo), "--quiet"]) == 0
            await plane.manager.load("other")
            refused = await c.post("/invocations", content=b"x")
            assert refused.status_code == 400
            assert refused.json()["message"] == "Parameter model_name is required."
            assert (await c.post("/invocations?model_name=m", content=b"x")).json() == ["body", "model_name"]
    finally:
        await plane.close()
