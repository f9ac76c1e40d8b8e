"""Serve an exported repository and call it over KServe v2 JSON and binary.

    python examples/serve_and_infer.py REPO MODEL

Starts `modelport serve REPO` on a free port, waits for readiness, sends the model's golden
input both ways, prints the answers, then stops the server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson


def main(repo: Path, model: str) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(repo), "--http-port", str(port)])
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
        meta = httpx.get(f"{url}/v2/models/{model}").json()
        spec = meta["inputs"][0]
        golden = np.load(repo / model / meta["parameters"]["version"] / "golden.npz")
        x = golden[f"case0/inputs/{spec['name']}"]
        body = {
            "inputs": [
                {"name": spec["name"], "shape": list(x.shape), "datatype": spec["datatype"], "data": x.ravel().tolist()}
            ]
        }
        answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body).json()
        print("JSON  :", answer["outputs"][0]["name"], np.round(answer["outputs"][0]["data"][:5], 3))

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
        print("binary:", np.round(np.frombuffer(raw.content[length:], np.float32)[:5], 3))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
