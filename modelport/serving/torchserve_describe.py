"""A model version as TorchServe 0.12's describe API shows it (``GET /models/{m}``, gRPC ``DescribeModel``)."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from typing import Any

from modelport.errors import ModelportError
from modelport.serving.dataplane import DataPlane
from modelport.serving.types import ModelDetails, VersionState

__all__ = ["archive_url", "described_version"]


def described_version(details: ModelDetails, default_timeout_s: float) -> dict[str, Any]:
    """One version as TorchServe 0.12's describe API shows a model, with all its keys: workers are the version's
    runtime instances (``pid`` the server's), ``maxWorkers`` TorchServe's (``max_workers`` in ``config.yaml``) when
    above them, ``maxBatchDelay`` the configured delay (a batch of one waits for none), ``responseTimeout`` its
    request timeout (the model's ``timeout_ms``, else ``default_timeout_s``), ``jobQueueStatus`` its batch queue;
    what modelport does not have (sequences, job tickets, venvs, parallelism, continuous batching) is off, as
    TorchServe shows it off, and ``startupTimeout`` and ``maxRetryTimeoutInSec`` are TorchServe's defaults
    (modelport has no such limits)."""
    state = details.status.state
    status = state.value if state in (VersionState.READY, VersionState.UNLOADING) else "FAILED"
    started = _timestamp(details.started)
    return {
        "modelName": details.name,
        "modelVersion": str(details.status.version),
        "modelUrl": details.platform.get("mar") or str(details.directory),  # TorchServe's: the archive's file
        "runtime": details.platform.get("mar_runtime") or details.format or "unknown",  # the archive's runtime
        "minWorkers": details.instances,
        "maxWorkers": max(details.instances, details.max_workers),
        "batchSize": details.max_batch_size,
        "maxBatchDelay": round(1000 * details.max_queue_delay_s),
        "responseTimeout": max(1, round(details.timeout_s or default_timeout_s)),
        **_TORCHSERVE_OFF,
        "deviceType": "gpu" if details.gpu else "cpu",
        **_SEQUENCES_OFF,
        "loadedAtStartup": True,
        "workers": [
            {
                "id": str(i),
                "startTime": started,
                "status": status,
                "memoryUsage": 0,
                "pid": os.getpid(),
                "gpu": details.gpu,
                "gpuUsage": "N/A",
            }
            for i in range(max(1, details.instances))
        ],
        "jobQueueStatus": {
            "remainingCapacity": max(0, details.queue_capacity - details.pending),
            "pendingRequests": details.pending,
        },
        **({"reason": details.status.reason} if details.status.reason else {}),
    }


_TORCHSERVE_OFF = {
    "startupTimeout": 120,
    "maxRetryTimeoutInSec": 300,
    "clientTimeoutInMills": 0,
    "parallelType": "",
    "parallelLevel": 0,
}
_SEQUENCES_OFF = {
    "continuousBatching": False,
    "useJobTicket": False,
    "useVenv": False,
    "stateful": False,
    "sequenceMaxIdleMSec": 0,
    "sequenceTimeoutMSec": 0,
    "maxNumSequence": 0,
    "maxSequenceJobQueueSize": 0,
}


def _timestamp(moment: datetime | None) -> str:
    """TorchServe's ``startTime``: ISO 8601 UTC with milliseconds (``2026-12-06T16:23:05.095Z``)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def archive_url(plane: DataPlane, model: str) -> str:
    """TorchServe's ``modelUrl`` of a model in its list: its default version's archive file, else its name."""
    with contextlib.suppress(ModelportError):
        default = plane.model_metadata(model).status.version
        for details in plane.model_details(model):
            if details.status.version == default and details.platform.get("mar"):
                return details.platform["mar"]
    return model
