"""A real TorchServe for tests: archive with torch-model-archiver, run in the foreground with its own
TMPDIR/TEMP (TorchServe keeps a machine-wide pid file there), ports on 127.0.0.1, logs in the work dir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class TorchServe:
    inference: str
    management: str
    process: subprocess.Popen[bytes]
    log: Path


def archive(serialized: Path, handler: Path, name: str, store: Path) -> Path:
    """``torch-model-archiver`` a .mar of ``serialized`` with ``handler`` into ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1.0"]
    command += ["--serialized-file", str(serialized), "--handler", str(handler), "--export-path", str(store), "--force"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return store / f"{name}.mar"


@contextlib.contextmanager
def torchserve(
    store: Path, model: str, work: Path, ports: tuple[int, ...], timeout: float = 180
) -> Iterator[TorchServe]:
    """TorchServe serving ``store/<model>.mar`` on ``ports`` (inference, management, metrics, gRPC inference,
    gRPC management); yields once its worker is READY, stops it after."""
    tmp, logs = work / "tmp", work / "logs"
    for folder in (tmp, logs):
        folder.mkdir(parents=True, exist_ok=True)
    models = {
        model: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{model}.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": 4,
                "maxBatchDelay": 5,
                "responseTimeout": 60,
            }
        }
    }
    properties = {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "grpc_inference_port": str(ports[3]),  # TorchServe also opens gRPC ports (default 7070/7071)
        "grpc_management_port": str(ports[4]),
        "model_store": str(store),
        "load_models": f"{model}.mar",
        "models": json.dumps(models),
        "disable_token_authorization": "true",
        "disable_system_metrics": "true",
        "install_py_dep_per_model": "false",
    }
    config = work / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "TEMP": str(tmp),
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
        "OMP_NUM_THREADS": "1",
    }
    command = [str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
    command += ["--ts-config", str(config), "--model-store", str(store)]
    log = work / "torchserve.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=work, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = TorchServe(properties["inference_address"], properties["management_address"], process, log)
    try:
        _wait_model(served, model, timeout)
        yield served
    finally:
        stop(served)


def stop(served: TorchServe) -> None:
    """SIGTERM TorchServe's process group (the launcher, Java and its Python workers), SIGKILL if it hangs."""
    group = served.process.pid  # start_new_session: the launcher leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        served.process.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.2)
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


def _wait_model(served: TorchServe, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"TorchServe exited with {served.process.returncode}: {_tail(served.log)}")
        with contextlib.suppress(httpx.TransportError):
            status = httpx.get(f"{served.management}/models/{model}", timeout=2)
            if status.status_code == 200 and any(w.get("status") == "READY" for w in status.json()[0]["workers"]):
                return
        time.sleep(0.3)
    raise AssertionError(f"TorchServe did not get {model} ready in {timeout}s: {_tail(served.log)}")


def _tail(path: Path) -> str:
    return " | ".join(path.read_text(errors="replace").splitlines()[-15:]) if path.exists() else ""
