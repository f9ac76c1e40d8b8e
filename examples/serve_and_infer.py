"""Serve an exported repository and call it over KServe v2 JSON and binary.

    python examples/serve_and_infer.py REPO MODEL

Starts `modelport serve REPO` on a free port, waits for readiness, sends the model's golden
input both ways, prints the answers, then stops the server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson


@contextlib.contextmanager
def running_server(repo: Path) -> Iterator[str]:
    """`modelport serve REPO` on a free port; yields its URL once ready, then SIGTERMs it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelport.cli",
            "serve",
            str(repo),
            "--http-port",
            str(port),
            "--grpc-port",
            "0",
            "--log-level",
            "warning",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        if server.wait(60) != 0:
            raise RuntimeError(f"the server exited with {server.returncode}")


def golden_request(repo: Path, url: str, model: str) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    """The model's first golden input as a v2 input spec + array."""
    meta = httpx.get(f"{url}/v2/models/{model}").json()
    spec = meta["inputs"][0]
    golden = np.load(repo / model / meta["parameters"]["version"] / "golden.npz")
    return spec, golden[f"case0/inputs/{spec['name']}"]


def infer_json(url: str, model: str, spec: dict[str, Any], x: np.ndarray[Any, Any]) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": spec["name"], "shape": list(x.shape), "datatype": spec["datatype"], "data": x.ravel().tolist()}
        ]
    }
    output: dict[str, Any] = httpx.post(f"{url}/v2/models/{model}/infer", json=body).json()["outputs"][0]
    return output


def infer_binary(url: str, model: str, spec: dict[str, Any], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": spec["name"],
                    "shape": list(x.shape),
                    "datatype": spec["datatype"],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    raw = httpx.post(
        f"{url}/v2/models/{model}/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    length = int(raw.headers["inference-header-content-length"])
    return np.frombuffer(raw.content[length:], np.float32)


def main(repo: Path, model: str) -> int:
    with running_server(repo) as url:
        spec, x = golden_request(repo, url, model)
        output = infer_json(url, model, spec, x)
        print("JSON  :", output["name"], np.round(output["data"][:5], 3))
        print("binary:", np.round(infer_binary(url, model, spec, x)[:5], 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
