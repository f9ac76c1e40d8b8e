"""Locust users that replay pre-encoded inference requests (run by locust, never imported by modelport).

The driver writes a plan (``MODELPORT_LOADTEST_PLAN``): the transport, host, HTTP path or gRPC
method, headers, and the request bodies; a token comes in ``MODELPORT_LOADTEST_TOKEN``.
``ModelportHttpUser`` posts the bodies with locust's fast HTTP client; ``ModelportGrpcUser`` calls
the gRPC method with raw bytes and reports every call to locust's ``request`` event, as any custom
locust client does.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import grpc
import grpc.experimental.gevent
import numpy as np
from locust import User, constant, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

grpc.experimental.gevent.init_gevent()  # gRPC's event loop must yield to gevent (after locust's monkey patching)

PLAN: dict[str, Any] = json.loads(open(os.environ["MODELPORT_LOADTEST_PLAN"]).read())  # noqa: SIM115
with np.load(PLAN["payloads"]) as _stored:
    BODIES = [_stored[f"body{i}"].tobytes() for i in range(len(PLAN["payload_headers"]))]
TOKEN = os.environ.get("MODELPORT_LOADTEST_TOKEN", "")
AUTH = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
HEADERS = [{**PLAN["headers"], **extra, **AUTH} for extra in PLAN["payload_headers"]]
METADATA = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else None
WAIT = constant_throughput(PLAN["rps_per_user"]) if PLAN["rps_per_user"] else constant(0)


class ModelportHttpUser(FastHttpUser):
    """POSTs one of the bodies per task; anything but HTTP 200 is a failure named by its status."""

    host = PLAN["host"]
    wait_time = WAIT
    network_timeout = connection_timeout = PLAN["timeout_s"]

    @task
    def infer(self) -> None:
        i = random.randrange(len(BODIES))
        with self.client.post(
            PLAN["path"], data=BODIES[i], headers=HEADERS[i], name=PLAN["name"], catch_response=True
        ) as response:
            if response.status_code != 200:
                text = (response.text or "")[:200] if response.status_code else str(response.error)
                response.failure(f"HTTP {response.status_code}: {text}")


class GrpcError(Exception):
    """A failed gRPC call, named by its status code."""


class ModelportGrpcUser(User):
    """Calls the planned gRPC method with raw request bytes and fires locust's ``request`` event."""

    host = PLAN["host"]
    wait_time = WAIT

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(PLAN["host"])
        self.call = self.channel.unary_unary(PLAN["path"])

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def infer(self) -> None:
        body = BODIES[random.randrange(len(BODIES))]
        start = time.perf_counter()
        length, error = 0, None
        try:
            length = len(self.call(body, timeout=PLAN["timeout_s"], metadata=METADATA))
        except grpc.RpcError as exc:
            error = GrpcError(f"gRPC {exc.code().name}: {exc.details()}")
        self.environment.events.request.fire(
            request_type="grpc",
            name=PLAN["name"],
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            response=None,
            context={},
            exception=error,
        )
