"""``runtime: torchserve``: forward predictions to a running TorchServe's inference API.

Each instance of a batch is one ``POST {address}/predictions/{model}[/{version}]`` with the
instance as JSON (a nested list for a single input, a dict of named inputs otherwise), as
TorchServe's handlers take it; TorchServe batches the concurrent calls itself. The answer is
the instance's output (a nested list, or a dict of named outputs). Health is ``GET /ping``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import orjson

from modelport.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidArgumentError,
    ModelportError,
    UnavailableError,
)
from modelport.runtimes.base import Arrays
from modelport.runtimes.remote import RemoteRuntime, fan_out, split_rows, stack_rows

__all__ = ["TorchServeRuntime"]


class TorchServeRuntime(RemoteRuntime):
    """A model served by TorchServe, reached over its REST inference API."""

    kind = "torchserve"
    _client: httpx.Client | None = None
    _pool: ThreadPoolExecutor | None = None

    def _connect(self) -> None:
        limits = max(1, self.manifest.max_batch_size or 1)
        self._client = httpx.Client(
            base_url=self.target.address.rstrip("/"),
            timeout=self.target.timeout_s,
            limits=httpx.Limits(max_connections=min(limits, 64), max_keepalive_connections=min(limits, 64)),
        )
        self._pool = ThreadPoolExecutor(max_workers=min(limits, 16), thread_name_prefix="torchserve-call")

    def _disconnect(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()

    def _probe(self) -> tuple[bool, str]:
        response = self._send("GET", "/ping")
        status = _json(response).get("status") if response.status_code == 200 else None
        if status != "Healthy":
            return False, f"TorchServe at {self.target.address} reports {status or response.status_code}"
        return True, ""

    def _call(self, inputs: Arrays) -> Arrays:
        assert self._pool is not None
        rows = fan_out(self._pool, self._one, split_rows(self.manifest, inputs))
        return stack_rows(self.manifest, rows)

    def _one(self, row: Arrays) -> Arrays:
        path = f"/predictions/{self.target.model}" + (f"/{self.target.version}" if self.target.version else "")
        body = orjson.dumps(_instance(row), option=orjson.OPT_SERIALIZE_NUMPY)
        response = self._send("POST", path, content=body, headers={"content-type": "application/json"})
        if response.status_code != 200:
            raise _remote_error(response, self.target.address)
        return self._outputs(response)

    def _outputs(self, response: httpx.Response) -> Arrays:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise InferenceError(f"TorchServe answered with a body that is not JSON: {response.text[:200]!r}") from None
        names = [s.name for s in self.manifest.outputs]
        if isinstance(data, dict) and set(names) <= set(data):
            return {n: np.asarray(data[n]) for n in names}
        if len(names) == 1:
            return {names[0]: np.asarray(data)}
        raise InferenceError(f"TorchServe's answer does not hold the outputs {names}")

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self._client is not None
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise UnavailableError(f"TorchServe at {self.target.address} is unreachable: {exc}", 2.0) from None
            raise DeadlineExceededError(f"TorchServe at {self.target.address} did not answer in time") from None
        except httpx.TransportError as exc:
            raise UnavailableError(f"TorchServe at {self.target.address} is unreachable: {exc}", 2.0) from None


def _instance(row: Arrays) -> Any:
    values = {name: _jsonable(v) for name, v in row.items()}
    return next(iter(values.values())) if len(values) == 1 else values


def _jsonable(value: np.ndarray[Any, Any]) -> Any:
    if value.dtype == object:
        return _text(value.tolist())
    if (value.dtype.kind == "f" and value.dtype.itemsize < 4) or value.dtype.kind == "V":  # float16, bfloat16
        value = value.astype(np.float32)
    return np.ascontiguousarray(value) if value.ndim else value.item()


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _remote_error(response: httpx.Response, address: str) -> ModelportError:
    message = str(_json(response).get("message") or response.text[:200])
    status = response.status_code
    if status in (404, 429, 503):
        return UnavailableError(f"TorchServe at {address} cannot serve the model now ({status}): {message}", 2.0)
    if status in (408, 504):
        return DeadlineExceededError(f"TorchServe at {address} timed out: {message}")
    if 400 <= status < 500:
        return InvalidArgumentError(f"TorchServe at {address} rejected the request ({status}): {message}")
    return InferenceError(f"TorchServe at {address} failed ({status}): {message}")
