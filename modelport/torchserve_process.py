"""Start a real TorchServe (0.12, Java) as a subprocess and wait until it serves a model: the one adapter.

Each run gets its own TMPDIR/TEMP (TorchServe keeps a machine-wide pid file there), logs, config.properties
and free ports on 127.0.0.1 (inference, management, metrics and both gRPC ports, which TorchServe otherwise
opens on 7070/7071). Readiness is polled: ``/ping`` and a READY worker of the model on the management API.
It stops by process group (the launcher, Java and its Python workers). The tests and the serving benchmark
start TorchServe here; ``torch-model-archiver`` sits here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from modelport.errors import ModelportError
from modelport.ports import free_port

__all__ = [
    "TorchServe",
    "TorchServeOptions",
    "TorchServePorts",
    "archive",
    "config_properties",
    "running_torchserve",
    "stop",
    "torchserve_missing",
]

BIN = Path(sys.executable).parent  # torchserve and torch-model-archiver come with the venv's torchserve extra
HOST = "127.0.0.1"


class TorchServePorts(NamedTuple):
    """The five ports TorchServe listens on (all on 127.0.0.1)."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    @classmethod
    def free(cls) -> TorchServePorts:
        """Five ports free right now (pass the same ones to a restart to keep its URLs)."""
        return cls(*(free_port(HOST) for _ in range(5)))


@dataclass(frozen=True)
class TorchServeOptions:
    """How to run TorchServe: its model's batching, ports (None = free ones), environment, limits."""

    batch_size: int = 4
    max_batch_delay_ms: int = 5
    response_timeout_s: int = 60
    max_message_bytes: int = 64 * 1024 * 1024  # request and response size limit (TorchServe's default is 6.5 MB)
    ports: TorchServePorts | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    command_prefix: tuple[str, ...] = ()  # runs TorchServe under it, e.g. ("taskset", "-c", "0")
    also: tuple[str, ...] = ()  # more archives of the same model store served beside the first (file names)
    timeout_s: float = 180.0  # until the model has a READY worker
    stop_timeout_s: float = 60.0  # SIGTERM to the group, then SIGKILL
    model_api: bool = False  # enable_model_api: register/scale/unregister on the management API (off by default)
    properties: Mapping[str, str] = field(default_factory=dict)  # config.properties entries set last (load_models...)
    ready: tuple[str, ...] = ()  # the model names to wait for (default: the archives' file names, less .mar)
    snapshots: bool = False  # TorchServe's config snapshots (logs/config/*-snapshot.cfg), off (--ncs) by default


@dataclass(frozen=True)
class TorchServe:
    """A started TorchServe: its URLs, the launcher process (it leads its own process group) and its log."""

    model: str
    inference: str
    management: str
    metrics: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The launcher's pid, which is also its process group's id."""
        return self.process.pid


def torchserve_missing() -> str | None:
    """Why TorchServe cannot run here, or None."""
    if shutil.which("java") is None:
        return "java is not installed"
    for tool in ("torchserve", "torch-model-archiver"):
        if not (BIN / tool).exists():
            return f"{tool} is not installed in the virtualenv"
    return None


def archive(
    serialized: Path,
    handler: Path,
    name: str,
    store: Path,
    *,
    directory: bool = False,
    extra_files: Sequence[Path] = (),
    version: str = "1.0",
    config_file: Path | None = None,
    requirements_file: Path | None = None,
    tgz: bool = False,
) -> Path:
    """``torch-model-archiver`` ``serialized`` with ``handler`` (and ``extra_files``, e.g. ``index_to_name.json``;
    a folder's contents keep their subfolders), its ``config_file`` (``model-config.yaml``) and
    ``requirements_file``, into ``store``: ``<name>.mar``, ``<name>.tar.gz`` (``tgz``) or the unpacked ``<name>/``
    folder (``directory``, TorchServe's no-archive format), with the archive's ``version``. Returns what it wrote."""
    store.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", version]
    command += ["--serialized-file", str(serialized), "--handler", str(handler), "--export-path", str(store)]
    command += ["--extra-files", ",".join(map(str, extra_files))] if extra_files else []
    command += ["--config-file", str(config_file)] if config_file else []
    command += ["--requirements-file", str(requirements_file)] if requirements_file else []
    archive_format = "no-archive" if directory else "tgz" if tgz else "default"
    command += ["--archive-format", archive_format, "--force"]
    with tempfile.TemporaryDirectory(prefix="modelport-archiver-") as staging:  # it stages in $TMPDIR/<name>:
        env = {**os.environ, "TMPDIR": staging}  # two archives of one name at once (pytest-xdist) would collide
        done = subprocess.run(command, capture_output=True, timeout=120, check=False, env=env)
    if done.returncode != 0:
        raise ModelportError(f"torch-model-archiver failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return store / (name if directory else f"{name}.tar.gz" if tgz else f"{name}.mar")


def config_properties(model_archive: Path, ports: TorchServePorts, options: TorchServeOptions) -> dict[str, str]:
    """TorchServe's config.properties serving ``model_archive`` (a .mar or a no-archive folder in the model
    store; ``options.also``: more archives of that store beside it) with one worker each, on ``ports``, without
    token authorization, system metrics or per-model pip (``options.model_api``: with the management API's
    write side, which TorchServe 0.12 answers with 405 unless enabled)."""

    def model(name: str) -> dict[str, dict[str, object]]:
        return {
            "1.0": {
                "defaultVersion": True,
                "marName": name,
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": options.batch_size,
                "maxBatchDelay": options.max_batch_delay_ms,
                "responseTimeout": options.response_timeout_s,
            }
        }

    names = (model_archive.name, *options.also)
    return {
        "inference_address": f"http://{HOST}:{ports.inference}",
        "management_address": f"http://{HOST}:{ports.management}",
        "metrics_address": f"http://{HOST}:{ports.metrics}",
        "grpc_inference_address": HOST,
        "grpc_management_address": HOST,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": str(model_archive.parent),
        "load_models": ",".join(names),
        "models": json.dumps({name.removesuffix(".mar"): model(name) for name in names}),
        "default_workers_per_model": "1",
        "disable_token_authorization": "true",
        "disable_system_metrics": "true",
        "install_py_dep_per_model": "false",
        "max_request_size": str(options.max_message_bytes),
        "max_response_size": str(options.max_message_bytes),
        **({"enable_model_api": "true"} if options.model_api else {}),
        **options.properties,
    }


@contextlib.contextmanager
def running_torchserve(
    model_archive: Path, work: Path, options: TorchServeOptions | None = None
) -> Iterator[TorchServe]:
    """TorchServe serving ``model_archive`` (``<store>/<model>.mar`` or ``<store>/<model>/``) until the block
    ends, then :func:`stop`. ``work`` gets its tmp/, logs/, config.properties and torchserve.log."""
    opts = options or TorchServeOptions()
    model_archive, work = model_archive.resolve(), work.resolve()  # TorchServe runs in ``work``: relative paths break
    ports = opts.ports or TorchServePorts.free()
    properties = config_properties(model_archive, ports, opts)
    tmp, logs = work / "tmp", work / "logs"
    for folder in (tmp, logs):
        folder.mkdir(parents=True, exist_ok=True)
    config = work / "config.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", **opts.env}
    env.update({"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)})
    command = [*opts.command_prefix, str(BIN / "torchserve"), "--start", "--foreground"]
    command += [] if opts.snapshots else ["--ncs"]
    command += ["--disable-token-auth", "--ts-config", str(config), "--model-store", str(model_archive.parent)]
    log = work / "torchserve.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=work, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    model = model_archive.name.removesuffix(".mar")
    inference, management, metrics = (properties[f"{kind}_address"] for kind in ("inference", "management", "metrics"))
    served = TorchServe(model, inference, management, metrics, process, log)
    try:
        for name in opts.ready or (*opts.also, model_archive.name):
            _wait_ready(replace(served, model=name.removesuffix(".mar")), opts.timeout_s)
        yield served
    finally:
        stop(served, opts.stop_timeout_s)


def stop(served: TorchServe, timeout: float = 60.0) -> None:
    """SIGTERM TorchServe's process group (the launcher, Java and its Python workers), wait until all of it
    is gone, SIGKILL whatever is left after ``timeout``. Stopping a stopped TorchServe does nothing."""
    group = served.pid  # start_new_session: the launcher leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        served.process.wait(timeout)
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.1)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        served.process.wait(10)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_ready(served: TorchServe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise ModelportError(f"TorchServe exited with {served.process.returncode}: {_tail(served.log)}")
        if _get(f"{served.inference}/ping") is not None and _worker_ready(served):
            return
        time.sleep(0.2)
    raise ModelportError(f"TorchServe did not get {served.model} ready in {timeout:g}s: {_tail(served.log)}")


def _worker_ready(served: TorchServe) -> bool:
    body = _get(f"{served.management}/models/{served.model}")
    with contextlib.suppress(ValueError, LookupError, TypeError, AttributeError):
        return body is not None and any(w.get("status") == "READY" for w in json.loads(body)[0]["workers"])
    return False


def _get(url: str) -> bytes | None:
    """The body of a 200 answer to GET ``url``, or None (any other status, or no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read() if answer.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
