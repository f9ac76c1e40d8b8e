"""System (b): the Python transport floor, the leanest honest KServe v2 JSON handler.

    python benchmarks/floor_server.py --model model.onnx --port 8100 [--framework starlette|fastapi|null] [--threads 1]

``starlette`` (the floor, system ``floor``): one bare Starlette route, no middleware of ours;
``fastapi`` (system ``floor-fastapi``): the same handler as a FastAPI route, to show what the framework
costs; ``null`` (system ``null``): uvicorn's own ceiling, a pure ASGI app that reads the body and sends
a response computed once, bounding what any handler on uvicorn can reach. All run on uvicorn with
httptools and uvloop. The floors do no validation, no batching, no metrics: orjson-decode the v2
request, call onnxruntime, orjson-encode the response. Anything a real server does on top of this is
overhead to explain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]


def handlers(model: str, threads: int) -> tuple[Handler, Handler]:
    """``ready`` and ``infer`` over one onnxruntime session (any model name in the URL is accepted)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    async def infer(request: Request) -> Response:
        item = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        values = session.run(output_names, {input_name: x})
        outputs: list[dict[str, Any]] = [
            {"name": n, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel()}
            for n, v in zip(output_names, values, strict=True)
        ]
        name = request.path_params["name"]
        body = orjson.dumps({"model_name": name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    return ready, infer


def starlette_app(model: str, threads: int) -> Any:
    """The floor: a bare Starlette app, ``GET /v2/health/ready`` and ``POST /v2/models/{name}/infer``."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    ready, infer = handlers(model, threads)
    routes = [
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def fastapi_app(model: str, threads: int) -> Any:
    """The same two routes on FastAPI (no docs or OpenAPI routes)."""
    from fastapi import FastAPI

    ready, infer = handlers(model, threads)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/v2/health/ready", ready, methods=["GET"])
    app.add_api_route("/v2/models/{name}/infer", infer, methods=["POST"])
    return app


def null_app(model: str, threads: int) -> Any:
    """The ceiling of any server on uvicorn: a pure ASGI app that reads the body and answers the model's
    response computed once at start (no parsing, no model run, no framework)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.zeros([d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape], dtype=np.float32)
    values = session.run(None, {session.get_inputs()[0].name: x})
    outputs = [
        {"name": o.name, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel()}
        for o, v in zip(session.get_outputs(), values, strict=True)
    ]
    body = orjson.dumps({"model_name": "null", "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app, "null": null_app}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="path of the .onnx file")
    parser.add_argument("--framework", choices=sorted(APPS), default="starlette")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = default)")
    args = parser.parse_args(argv)
    app = APPS[args.framework](args.model, args.threads)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,  # as modelport runs uvicorn: the leanest honest floor
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
