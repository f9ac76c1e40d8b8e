"""Serve an exported repository and call it over KServe v2 JSON and binary.

    python examples/serve_and_infer.py REPO MODEL

Starts `modelport serve REPO` on free ports through `modelport.launcher` (which reads the ports back
from `--port-file` and waits for readiness), sends the model's golden input both ways, prints the
answers, then stops the server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from modelport.launcher import LaunchOptions, launched


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
    with launched(repo, "--log-level", "warning", options=LaunchOptions(timeout_s=120)) as server:
        url = server.url
        spec, x = golden_request(repo, url, model)
        output = infer_json(url, model, spec, x)
        print("JSON  :", output["name"], np.round(output["data"][:5], 3))
        print("binary:", np.round(infer_binary(url, model, spec, x)[:5], 3))
    if server.process.returncode != 0:
        raise RuntimeError(f"the server exited with {server.process.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
