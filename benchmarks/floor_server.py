"""System (b): the Python transport floor, a minimal FastAPI/uvicorn KServe v2 JSON handler.

    python benchmarks/floor_server.py --model model.onnx --name mlp --port 8100 [--threads 1]

No validation, no batching, no metrics: orjson-decode the v2 request, call onnxruntime,
orjson-encode the response. Anything a real server does on top of this is overhead to explain.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app(model: str, threads: int) -> FastAPI:
    """The app: ``GET /v2/health/ready`` and ``POST /v2/models/{name}/infer`` (JSON only)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        item = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        values = session.run(output_names, {input_name: x})
        outputs: list[dict[str, Any]] = [
            {"name": n, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel()}
            for n, v in zip(output_names, values, strict=True)
        ]
        body = orjson.dumps({"model_name": name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="path of the .onnx file")
    parser.add_argument("--name", default="model", help="unused; any model name in the URL is accepted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = default)")
    args = parser.parse_args(argv)
    app = create_app(args.model, args.threads)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
