"""The OpenAPI document of the whole HTTP port.

Inference (KServe v2 infer, TF Serving REST, TorchServe) is routed by Starlette in front of the
FastAPI app, so FastAPI cannot see those routes: their path items are written here by hand, with
schemas for the request and response bodies, and merged into FastAPI's generated document along
with the error responses of FastAPI's own routes. ``tests/serving/test_fuzz.py`` fuzzes the
server from this document with schemathesis, so it has to stay exact.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from modelport.tensors import DTYPES

__all__ = ["install_openapi"]

JSON = "application/json"
_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _body(schema: dict[str, Any], description: str = "", media: str = JSON) -> dict[str, Any]:
    return {"description": description or "OK", "content": {media: {"schema": schema}}}


def _errors(*codes: int, schema: str = "Error") -> dict[str, Any]:
    reasons = {
        400: "bad request: the message names the tensor and what was expected",
        401: "missing or wrong token (when authentication is on)",
        403: "model control is disabled",
        404: "unknown model or version",
        405: "a write of TorchServe's management API on a server without --model-control",
        409: "the model version is already registered",
        413: "body over --max-body-bytes",
        501: "a request modelport does not implement (a load overriding what the manifest says, or files; "
        "Triton's trace settings; a shared memory registration on one of --workers N or with --no-shared-memory)",
        503: "model not ready, queue full or server draining (Retry-After)",
        504: "request timed out",
    }
    answers = {str(c): _body(_ref(schema), reasons[c]) for c in codes}
    if schema == "TorchServeError" and 413 in codes:  # TorchServe's 413 (over max_request_size) has no body
        answers["413"] = {"description": reasons[413]}
    return answers


def _path(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


VERSION = "^[0-9]+$"
_DIM = {"type": "integer", "minimum": 0, "maximum": 2**40 - 1}
_INFER_ERRORS = (400, 401, 404, 413, 503, 504)

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "TorchServeError": {
        "type": "object",
        "required": ["code", "type", "message"],
        "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}},
    },
    "V2InputTensor": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "shape": {"type": "array", "maxItems": 16, "items": _DIM},
            "datatype": {"type": "string", "enum": sorted(d.v2 for d in DTYPES.values())},
            "data": {"description": "row-major values, flat or nested; BYTES as strings or {b64: ...}"},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "items": _ref("V2InputTensor")},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                    },
                },
            },
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "data": {"type": "array"},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    },
    "TritonModelConfig": {
        "type": "object",
        "description": "Triton's model configuration (protobuf ModelConfig field names)",
        "required": ["name", "platform", "backend", "max_batch_size", "input", "output", "version_policy"],
        "properties": {
            "name": {"type": "string"},
            "platform": {"type": "string"},
            "backend": {"type": "string"},
            "max_batch_size": {"type": "integer", "minimum": 0},
            "input": {"type": "array", "items": _ref("TritonTensorConfig")},
            "output": {"type": "array", "items": _ref("TritonTensorConfig")},
            "version_policy": {"type": "object"},
            "dynamic_batching": {"type": "object"},
            "instance_group": {"type": "array", "items": {"type": "object"}},
            "default_model_filename": {"type": "string"},
        },
    },
    "TritonTensorConfig": {
        "type": "object",
        "required": ["name", "data_type", "dims"],
        "properties": {
            "name": {"type": "string"},
            "data_type": {"type": "string", "pattern": "^TYPE_"},
            "dims": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    },
    "SystemSharedMemoryStatus": {
        "type": "array",
        "description": "Triton's system shared memory extension: the registered regions",
        "items": {
            "type": "object",
            "required": ["name", "key", "offset", "byte_size"],
            "properties": {
                "name": {"type": "string"},
                "key": {"type": "string"},
                "offset": {"type": "integer", "minimum": 0},
                "byte_size": {"type": "integer", "minimum": 0},
            },
        },
    },
    "SystemSharedMemoryRegister": {
        "type": "object",
        "description": "a region: byte_size bytes at offset of the POSIX shared memory object key ('/name')",
        "required": ["key", "byte_size"],
        "properties": {
            "key": {"type": "string"},
            "offset": {"type": "integer", "minimum": 0},
            "byte_size": {"type": "integer", "minimum": 0},
        },
    },
    "CudaSharedMemoryStatus": {
        "type": "array",
        "description": "Triton's CUDA shared memory extension: modelport registers none",
        "maxItems": 0,
        "items": {"type": "object"},
    },
    "TritonStatistics": {
        "type": "object",
        "description": "Triton's statistics extension: one entry per ready model version",
        "required": ["model_stats"],
        "properties": {
            "model_stats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "version", "inference_count", "execution_count", "inference_stats"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "last_inference": {"type": "integer", "minimum": 0},
                        "inference_count": {"type": "integer", "minimum": 0},
                        "execution_count": {"type": "integer", "minimum": 0},
                        "inference_stats": {"type": "object"},
                        "batch_stats": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    },
    "TFPredictRequest": {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array", "minItems": 1, "description": "row format"},
            "inputs": {"description": "columnar format: a tensor, or an object of named tensors"},
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    },
    "TFPredictResponse": {
        "type": "object",
        "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
        "properties": {"predictions": {"type": "array"}, "outputs": {}},
    },
    "TFExamplesRequest": {
        "type": "object",
        "required": ["examples"],
        "properties": {
            "signature_name": {"type": "string"},
            "context": {"type": "object", "description": "features every example shares"},
            "examples": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object"},
                "description": "tf.Example features: a value or a list of values each (b64 objects for bytes)",
            },
        },
    },
    "TFClassifyResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "description": "per example: [[label, score], ...]"}},
    },
    "TFRegressResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": {"type": "number"}}},
    },
    "TFModelStatus": {
        "type": "object",
        "required": ["model_version_status", "name", "ready"],
        "properties": {
            "model_version_status": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "state", "status"],
                    "properties": {"version": {"type": "string"}, "state": {"type": "string"}, "status": {}},
                },
            },
            "name": {"type": "string", "description": "KServe v1 model readiness: the model's name"},
            "ready": {"type": "boolean", "description": "KServe v1 model readiness: whether it serves now"},
        },
    },
    "TFModelMetadata": {
        "type": "object",
        "required": ["model_spec", "metadata"],
        "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
    },
}


def _v2_infer(versioned: bool) -> dict[str, Any]:
    params = [_path("model")] + ([_path("version", VERSION)] if versioned else [])
    params.append(
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "binary tensor extension: length of the JSON header that precedes the tensor bytes",
            "schema": {"type": "integer", "minimum": 0},
        }
    )
    binary = {"type": "string", "format": "binary"}
    return {
        "post": {
            "operationId": "v2_infer_version" if versioned else "v2_infer",
            "tags": ["KServe v2"],
            "summary": "Run inference (JSON, or JSON + binary tensor data)",
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("V2InferRequest")}, "application/octet-stream": {"schema": binary}},
            },
            "responses": {
                "200": {
                    "description": "outputs",
                    "content": {JSON: {"schema": _ref("V2InferResponse")}, "application/octet-stream": {}},
                },
                **_errors(*_INFER_ERRORS),
            },
        }
    }


def _tf_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    variants = {"": [], "/versions/{version}": [_path("version", VERSION)], "/labels/{label}": [_path("label")]}
    for suffix, extra in variants.items():
        base = "/v1/models/{model}" + suffix
        params = [_path("model"), *extra]
        key = suffix.split("/")[1] if suffix else "default"
        paths[base] = {
            "get": {
                "operationId": f"tfserving_status_{key}",
                "tags": ["TF Serving"],
                "summary": "Model version status",
                "parameters": params,
                "responses": {"200": _body(_ref("TFModelStatus")), **_errors(400, 401, 404)},
            }
        }
        paths[base + "/metadata"] = {
            "get": {
                "operationId": f"tfserving_metadata_{key}",
                "tags": ["TF Serving"],
                "summary": "Signature metadata",
                "parameters": params,
                "responses": {"200": _body(_ref("TFModelMetadata")), **_errors(400, 401, 404, 503)},
            }
        }
        paths[base + ":predict"] = {
            "post": {
                "operationId": f"tfserving_predict_{key}",
                "tags": ["TF Serving"],
                "summary": "Predict (row or columnar format)",
                "parameters": params,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("TFPredictRequest")}}},
                "responses": {"200": _body(_ref("TFPredictResponse")), **_errors(*_INFER_ERRORS)},
            }
        }
        for method, answer in (("classify", "TFClassifyResponse"), ("regress", "TFRegressResponse")):
            paths[f"{base}:{method}"] = {
                "post": {
                    "operationId": f"tfserving_{method}_{key}",
                    "tags": ["TF Serving"],
                    "summary": f"{method.capitalize()} tf.Examples (a SavedModel's {method} signature)",
                    "parameters": params,
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("TFExamplesRequest")}}},
                    "responses": {"200": _body(_ref(answer)), **_errors(*_INFER_ERRORS)},
                }
            }
    return paths


def _management_paths() -> dict[str, dict[str, Any]]:
    """TorchServe's register, scale, set-default and unregister (model control)."""
    status = _body({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}})
    errors = _errors(400, 401, 403, 404, 405, 409, 501, 503, schema="TorchServeError")
    answers = {"200": status, "202": status, **errors}

    def query(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "query", "required": n == "url", "schema": {"type": "string"}} for n in names]

    def operation(op: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "operationId": op,
            "tags": ["TorchServe"],
            "summary": summary,
            "parameters": parameters,
            "responses": answers,
        }

    model, version = _path("model"), _path("version")
    register = query("url", "model_name", "batch_size", "max_batch_delay", "initial_workers", "synchronous", "input")
    scale = query("min_worker", "max_worker", "synchronous")
    return {
        "/models": {"post": operation("torchserve_register", "Register a model archive", register)},
        "/models/{model}": {
            "put": operation("torchserve_scale", "Scale a model's workers (instances)", [model, *scale]),
            "delete": operation("torchserve_unregister", "Unregister the default version", [model]),
        },
        "/models/{model}/{version}": {
            "put": operation("torchserve_scale_version", "Scale a model's workers", [model, version, *scale]),
            "delete": operation("torchserve_unregister_version", "Unregister a version", [model, version]),
        },
        "/models/{model}/{version}/set-default": {
            "put": operation("torchserve_set_default", "Set the default version", [model, version])
        },
    }


def _torchserve_paths() -> dict[str, Any]:
    paths = _torchserve_read_paths()
    for path, operations in _management_paths().items():
        paths.setdefault(path, {}).update(operations)
    return paths


def _torchserve_read_paths() -> dict[str, Any]:
    errors = _errors(401, 400, 404, 413, 503, 504, schema="TorchServeError")
    predictions = {
        "tags": ["TorchServe"],
        "summary": "One instance (or a batch) as a JSON tensor or a dict of named inputs; raw bytes for a string input",
        "requestBody": {"required": True, "content": {JSON: {"schema": {}}, "application/octet-stream": {}}},
        "responses": {"200": _body({}), **errors},
    }
    explanations = {
        **predictions,
        "summary": "A TorchServe handler's explanation (explain_handle) of the request, sent as to /predictions",
    }
    models = {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "object"}}},
    }
    describe = {"responses": {"200": _body({"type": "array", "items": {"type": "object"}}), **errors}}
    return {
        "/ping": {
            "get": {
                "operationId": "torchserve_ping",
                "tags": ["TorchServe"],
                "responses": {"200": _body({"type": "object", "required": ["status"]})},
            }
        },
        "/predictions/{model}": {
            "post": {**predictions, "operationId": "torchserve_predict", "parameters": [_path("model")]}
        },
        "/predictions/{model}/{version}": {
            "post": {
                **predictions,
                "operationId": "torchserve_predict_version",
                "parameters": [_path("model"), _path("version")],
            }
        },
        "/explanations/{model}": {
            "post": {**explanations, "operationId": "torchserve_explain", "parameters": [_path("model")]}
        },
        "/explanations/{model}/{version}": {
            "post": {
                **explanations,
                "operationId": "torchserve_explain_version",
                "parameters": [_path("model"), _path("version")],
            }
        },
        "/models": {
            "get": {"operationId": "torchserve_models", "tags": ["TorchServe"], "responses": {"200": _body(models)}}
        },
        "/models/{model}": {
            "get": {
                **describe,
                "operationId": "torchserve_describe",
                "tags": ["TorchServe"],
                "parameters": [_path("model")],
            }
        },
        "/models/{model}/{version}": {
            "get": {
                **describe,
                "operationId": "torchserve_describe_version",
                "tags": ["TorchServe"],
                "parameters": [_path("model"), _path("version")],
            }
        },
        **_torchserve_legacy_paths(predictions),
    }


def _torchserve_legacy_paths(predictions: dict[str, Any]) -> dict[str, Any]:
    """TorchServe's legacy and SageMaker inference routes (``serving/torchserve_legacy.py``): the query parameters
    are the handler's request fields."""
    legacy = {**predictions, "summary": "As /predictions, with the query parameters as the handler's request fields"}
    optional = {**legacy, "requestBody": {**legacy["requestBody"], "required": False}}
    model = _path("model")
    paths: dict[str, Any] = {
        "/invocations": {
            "post": {**legacy, "operationId": "torchserve_invocations", "summary": "SageMaker's: ?model_name=m"}
        },
        "/models/{model}/invoke": {"post": {**legacy, "operationId": "torchserve_invoke", "parameters": [model]}},
    }
    for path, parameters in (("/{model}/predict", [model]), ("/{model}/{version}/predict", [model, _path("version")])):
        name = "torchserve_legacy" + ("_version" if len(parameters) > 1 else "")
        paths[path] = {
            method: {**optional, "operationId": f"{name}_{method}", "parameters": parameters}
            for method in ("get", "post", "put", "delete", "patch")
        }
    return paths


# error responses of the FastAPI routes, which return them through the exception handlers
_FASTAPI_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v2/health/ready"): (503,),
    ("get", "/v2/models/{model}"): (401, 404),
    ("get", "/v2/models/{model}/versions/{version}"): (401, 404),
    ("get", "/v2/models/{model}/ready"): (401, 404, 503),
    ("get", "/v2/models/{model}/versions/{version}/ready"): (401, 404, 503),
    ("get", "/v2"): (401,),
    ("get", "/v2/models/stats"): (401, 503),
    ("get", "/v2/models/{model}/stats"): (401, 404, 503),
    ("get", "/v2/models/{model}/versions/{version}/stats"): (401, 404, 503),
    ("get", "/v2/models/{model}/config"): (401, 404, 503),
    ("get", "/v2/models/{model}/versions/{version}/config"): (401, 404, 503),
    ("get", "/v2/repository/index"): (401,),
    ("post", "/v2/repository/index"): (400, 401, 413),
    ("post", "/v2/repository/models/{model}/load"): (400, 401, 403, 404, 413, 501),
    ("post", "/v2/repository/models/{model}/unload"): (400, 401, 403, 404),
    ("get", "/v2/systemsharedmemory/status"): (401, 403),
    ("get", "/v2/systemsharedmemory/region/{region}/status"): (401, 403, 404),
    ("post", "/v2/systemsharedmemory/region/{region}/register"): (400, 401, 403, 413, 501),
    ("post", "/v2/systemsharedmemory/unregister"): (401, 403),
    ("post", "/v2/systemsharedmemory/region/{region}/unregister"): (401, 403),
    ("get", "/v2/cudasharedmemory/status"): (401,),
    ("get", "/v2/cudasharedmemory/region/{region}/status"): (401, 404),
    ("post", "/v2/cudasharedmemory/region/{region}/register"): (400, 401),
    ("post", "/v2/cudasharedmemory/unregister"): (401,),
    ("post", "/v2/cudasharedmemory/region/{region}/unregister"): (401,),
    **{
        (method, path): (401, 501)  # Triton's trace extension: not implemented, and said so
        for method in ("get", "post")
        for path in ("/v2/trace/setting", "/v2/models/{model}/trace/setting")
    },
    ("get", "/v2/logging"): (401,),
    ("post", "/v2/logging"): (400, 401, 403, 413),
}


# answers of FastAPI routes whose body has a schema (FastAPI only knows they return a Response)
_FASTAPI_BODIES = {
    "/v2/models/stats": "TritonStatistics",
    "/v2/models/{model}/stats": "TritonStatistics",
    "/v2/models/{model}/versions/{version}/stats": "TritonStatistics",
    "/v2/models/{model}/config": "TritonModelConfig",
    "/v2/models/{model}/versions/{version}/config": "TritonModelConfig",
    "/v2/systemsharedmemory/status": "SystemSharedMemoryStatus",
    "/v2/systemsharedmemory/region/{region}/status": "SystemSharedMemoryStatus",
    "/v2/cudasharedmemory/status": "CudaSharedMemoryStatus",
    "/v2/cudasharedmemory/region/{region}/status": "CudaSharedMemoryStatus",
}


def _merge_fastapi_errors(document: dict[str, Any]) -> None:
    for (method, path), codes in _FASTAPI_ERRORS.items():
        operation = document["paths"][path][method]
        operation["responses"].update(_errors(*codes))
        operation["responses"].pop("422", None)  # path parameters are plain strings: FastAPI never answers 422
    for path, schema in _FASTAPI_BODIES.items():
        document["paths"][path]["get"]["responses"]["200"] = _body(_ref(schema))
    register = document["paths"]["/v2/systemsharedmemory/region/{region}/register"]["post"]
    register["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref("SystemSharedMemoryRegister")}}}
    index = document["paths"]["/v2/repository/index"]["post"]
    index["requestBody"] = {
        "required": False,
        "content": {JSON: {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
    }


def install_openapi(api: FastAPI) -> None:
    """Make ``api.openapi()`` (served at ``/openapi.json``) describe every route of the HTTP port."""

    def document() -> dict[str, Any]:
        if api.openapi_schema is None:
            generated = FastAPI.openapi(api)
            _merge_fastapi_errors(generated)
            generated["paths"].update(
                {
                    "/v2/models/{model}/infer": _v2_infer(versioned=False),
                    "/v2/models/{model}/versions/{version}/infer": _v2_infer(versioned=True),
                    **_tf_paths(),
                    **_torchserve_paths(),
                }
            )
            generated.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
            api.openapi_schema = generated
        return api.openapi_schema

    api.openapi = document  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
