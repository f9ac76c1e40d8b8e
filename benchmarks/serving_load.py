"""The serving benchmark's load: request bodies, response checks, the raw runtime, wrk, loadgen.py, gRPC."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from bench_models import BenchModel
from serving_config import HERE, PY, Config, base_env, pinned


@dataclass(frozen=True)
class Payload:
    """One system's request: its protocol, where it goes on its server, its body and the headers it needs."""

    # v2 (JSON or binary), tfserving, grpc (KServe v2 ModelInfer), predictions (a JSON object) or v2-bytes (one
    # BYTES element holding such an object)
    protocol: str
    path: str  # the HTTP path on the server; for grpc, the model name
    body_file: Path  # for grpc, one serialized ModelInferRequest
    width: int  # the answer: one output of shape [1, width]; for predictions, an object of width entries
    content_type: str = "application/json"
    header_length: int | None = None
    more_bodies: tuple[Path, ...] = ()  # HTTP only: the load cycles through body_file and these

    def bodies(self) -> tuple[Path, ...]:
        """Every body the load sends, in turn."""
        return (self.body_file, *self.more_bodies)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def write_payloads(model: BenchModel, folder: Path) -> dict[str, Payload]:
    """Every system's request for one item: v2 JSON (floors, v2-json, torchserve), v2 binary, TF Serving, gRPC."""
    x = np.random.default_rng(0).standard_normal((1, *model.input_shape), dtype=np.float32)
    item = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    json_body = orjson.dumps({"inputs": [{**item, "data": x.ravel()}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    header = orjson.dumps(
        {
            "inputs": [{**item, "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    )
    served = f"{model.name}-onnx"  # modelport's name for the ONNX export
    (folder / "body.json").write_bytes(json_body)
    (folder / "body.bin").write_bytes(header + x.astype("<f4").tobytes())
    (folder / "body.tfs.json").write_bytes(orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY))
    (folder / "body.grpc.bin").write_bytes(grpc_request(served, x))
    v2, width = f"/v2/models/{served}/infer", model.output_width
    return {
        "floor": Payload("v2", f"/v2/models/{model.name}/infer", folder / "body.json", width),
        "floor-fastapi": Payload("v2", f"/v2/models/{model.name}/infer", folder / "body.json", width),
        "null": Payload("v2", f"/v2/models/{model.name}/infer", folder / "body.json", width),
        "v2-json": Payload("v2", v2, folder / "body.json", width),
        "v2-binary": Payload("v2", v2, folder / "body.bin", width, "application/octet-stream", len(header)),
        "tfserving": Payload("tfserving", f"/v1/models/{served}:predict", folder / "body.tfs.json", width),
        "v2-grpc": Payload("grpc", served, folder / "body.grpc.bin", width, "application/grpc"),
        "torchserve": Payload("v2", f"/predictions/{model.name}", folder / "body.json", width),
        "v2-json-base": Payload("v2", v2, folder / "body.json", width),
        "v2-binary-base": Payload("v2", v2, folder / "body.bin", width, "application/octet-stream", len(header)),
        "v2-json-trace100": Payload("v2", v2, folder / "body.json", width),
        "v2-json-trace100-own": Payload("v2", v2, folder / "body.json", width),
        "v2-json-trace1": Payload("v2", v2, folder / "body.json", width),
    }


def grpc_request(model: str, x: np.ndarray[Any, Any]) -> bytes:
    """A serialized KServe v2 ``ModelInferRequest`` carrying ``x`` as input ``x`` in raw_input_contents."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return bytes(request.SerializeToString())


def check_response(payload: Payload, status: int, headers: Any, body: bytes) -> str | None:
    """None if the response is a 200 carrying one output of shape [1, width]; else what is wrong."""
    width = payload.width
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if payload.protocol == "tfserving":
        return _check_tfserving(body, width)
    if payload.protocol == "predictions":
        return _check_predictions(body, width)
    if payload.protocol == "v2-bytes":
        return _check_v2_bytes(body, width)
    length = headers.get("Inference-Header-Content-Length")
    try:
        header = orjson.loads(body if length is None else body[: int(length)])
        output = header["outputs"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return f"not a v2 response: {body[:200]!r}"
    if list(output.get("shape", [])) != [1, width]:
        return f"output shape {output.get('shape')} != [1, {width}]"
    if length is not None:
        size = output.get("parameters", {}).get("binary_data_size")
        if size != 4 * width or len(body) - int(length) != size:
            return f"binary output of {size} bytes, expected {4 * width}"
    elif len(output.get("data", [])) != width:
        return f"{len(output.get('data', []))} output values, expected {width}"
    return None


def _check_tfserving(body: bytes, width: int) -> str | None:
    try:
        predictions = orjson.loads(body)["predictions"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"not a TF Serving predict response: {body[:200]!r}"
    if not isinstance(predictions, list) or len(predictions) != 1 or len(predictions[0]) != width:
        return f"predictions are not one row of {width} values: {body[:200]!r}"
    return None


def _check_predictions(body: bytes, width: int) -> str | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON: {body[:200]!r}"
    if not isinstance(answer, dict) or len(answer) != width:
        return f"not an object of {width} entries: {body[:200]!r}"
    return None


def _check_v2_bytes(body: bytes, width: int) -> str | None:
    """One v2 output holding one BYTES element, JSON: an object of ``width`` entries."""
    try:
        data = orjson.loads(body)["outputs"][0]["data"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return f"not a v2 response: {body[:200]!r}"
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], str):
        return f"not one BYTES element: {body[:200]!r}"
    return _check_predictions(data[0].encode(), width)


def request_once(base_url: str, grpc_address: str | None, payload: Payload) -> str | None:
    """Send one request; None if it came back OK with the right output shape, else the problem."""
    if payload.protocol == "grpc":
        return _grpc_once(grpc_address, payload)
    body = payload.body_file.read_bytes()
    request = urllib.request.Request(base_url + payload.path, data=body, headers=payload.headers())
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return check_response(payload, response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return check_response(payload, exc.code, exc.headers, exc.read())
    except (OSError, urllib.error.URLError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _grpc_once(address: str | None, payload: Payload) -> str | None:
    import grpc
    from grpc_loadgen import well_formed
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    if address is None:
        return "the server has no gRPC port"
    request = service_pb2.ModelInferRequest.FromString(payload.body_file.read_bytes())
    with grpc.insecure_channel(address) as channel:
        try:
            reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10.0)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code().name}: {exc.details()}"
    width = payload.width
    return None if well_formed(reply, width) else f"not one [1, {width}] FP32 output: {str(reply)[:200]!r}"


def run_raw(cfg: Config, model: BenchModel, repo: Path) -> dict[str, Any]:
    """(a) onnxruntime in a subprocess pinned to the server core."""
    cmd = [PY, str(HERE / "raw_runtime.py"), "--model", str(repo / f"{model.name}-onnx/1/model.onnx")]
    cmd += ["--shape", "x".join(map(str, model.input_shape)), "--batch", "1,32"]
    cmd += ["--duration", str(cfg.raw_duration), "--threads", str(cfg.threads)]
    done = subprocess.run(pinned(cmd, cfg.server_cpu), check=True, capture_output=True, env=base_env(cfg))
    result: dict[str, Any] = json.loads(done.stdout)
    return result


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unparseable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms) and error counts from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if rps is None or total is None:
        raise ValueError(f"unparseable wrk output:\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", output, re.MULTILINE))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2) + total.group(3)) / 1e3,
        "rps": float(rps.group(1)),
        "p50_ms": _ms(latency["50"]) if "50" in latency else float("nan"),
        "p99_ms": _ms(latency["99"]) if "99" in latency else float("nan"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
    }


def run_load(
    cfg: Config, base_url: str, grpc_address: str | None, payload: Payload, concurrency: int
) -> dict[str, Any]:
    """One cell: ``concurrency`` keep-alive connections (gRPC: calls in flight) for ``cfg.duration`` seconds."""
    if payload.protocol == "grpc":
        cmd = [PY, str(HERE / "grpc_loadgen.py"), "--target", str(grpc_address), "--request", str(payload.body_file)]
        cmd += ["--concurrency", str(concurrency), "--duration", str(cfg.duration), "--width", str(payload.width)]
        return _json_from(pinned(cmd, cfg.client_cpu), loadgen="grpc")
    url = base_url + payload.path
    if cfg.loadgen == "wrk":
        seconds = max(1, round(cfg.duration))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "60s", "--latency"]
        cmd += ["-s", str(HERE / "post.lua"), url]
        env = dict(os.environ, WRK_BODY_FILE=str(payload.body_file), WRK_CONTENT_TYPE=payload.content_type)
        env["WRK_MORE_BODY_FILES"] = "\n".join(map(str, payload.more_bodies))
        env["WRK_HEADER_LENGTH"] = "" if payload.header_length is None else str(payload.header_length)
        done = subprocess.run(pinned(cmd, cfg.client_cpu), capture_output=True, text=True, env=env, check=True)
        return {**parse_wrk(done.stdout), "loadgen": "wrk"}
    cmd = [PY, str(HERE / "loadgen.py"), "--url", url, *(arg for b in payload.bodies() for arg in ("--body", str(b)))]
    cmd += ["--concurrency", str(concurrency), "--duration", str(cfg.duration)]
    cmd += [arg for k, v in payload.headers().items() for arg in ("--header", f"{k}: {v}")]
    return _json_from(pinned(cmd, cfg.client_cpu), loadgen="python")


def _json_from(cmd: list[str], loadgen: str) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return {**result, "loadgen": loadgen}
