"""The data plane: its per-version memo for the inference adapters, and how it counts a request whose client left."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelport.errors import ModelNotReadyError, NotFoundError
from modelport.serving.dataplane import DataPlane
from modelport.serving.types import InferRequest
from tests.serving import fakes
from tests.serving.processes import until


async def test_serving_metadata_is_made_once_per_loaded_version_and_only_for_ready_ones(plane: DataPlane) -> None:
    first = plane.serving_metadata("echo", "1")
    assert plane.serving_metadata("echo", "1") is first
    assert first == plane.model_metadata("echo", "1", ready_only=True)
    assert plane.serving_metadata("echo", "2") is not first
    with pytest.raises(ModelNotReadyError):
        plane.serving_metadata("broken")
    with pytest.raises(NotFoundError):
        plane.serving_metadata("missing")
    await plane.unload("echo")
    with pytest.raises(NotFoundError):
        plane.serving_metadata("echo", "1")
    await plane.load("echo")  # newly loaded versions: their metadata is made again
    assert plane.serving_metadata("echo", "1") is not first
    assert plane.serving_metadata("echo", "1") == first


def _requests_counted(plane: DataPlane, outcome: str) -> float:
    """modelport_requests_total of echo version 1 over v2 with ``outcome``, as /metrics shows it."""
    page = generate_latest(plane.metrics.exposition).decode()
    wanted = {"model": "echo", "version": "1", "protocol": "v2", "outcome": outcome}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "modelport_requests_total" and sample.labels == wanted:
                return sample.value
    return 0.0


async def test_a_request_cancelled_while_queued_is_counted_as_client_closed(plane: DataPlane) -> None:
    """The transports cancel the call of a client that went away: its own outcome, not an error."""
    x = {"x": np.ones((1, 3), dtype=np.float32)}
    fakes.GATE.clear()  # the first request's batch holds the model: the second waits for it
    first = asyncio.create_task(plane.infer("echo", "1", InferRequest(x), "v2"))
    await until(lambda: plane.in_flight == 1 and not fakes.GATE.is_set(), what="the first request in")
    gone = asyncio.create_task(plane.infer("echo", "1", InferRequest(x), "v2"))
    await until(lambda: plane.in_flight == 2, what="the second request queued")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert _requests_counted(plane, "client_closed") == 1.0
    assert plane.in_flight == 1
    fakes.GATE.set()
    assert (await first).outputs["y"].tolist() == [[2.0, 2.0, 2.0]]
    assert _requests_counted(plane, "success") == 1.0
    assert _requests_counted(plane, "client_closed") == 1.0


async def test_a_model_still_loading_at_start_is_unavailable_not_unknown(plane: DataPlane) -> None:
    """Before the first load finishes, a model the repository holds whose versions are not there yet answers 503
    with Retry-After (clients retry it), not a 404 (they would give up); once loaded, such a model is a 404."""
    from modelport.errors import UnavailableError
    from modelport.serving.manager import ModelEntry
    from modelport.serving.settings import ModelConfig

    manager = plane.manager
    manager.models["arriving"] = ModelEntry("arriving", ModelConfig())
    manager.loaded = False
    for version in (None, "1"):
        with pytest.raises(UnavailableError, match="'arriving' is still loading"):
            manager.get("arriving", version)
    with pytest.raises(UnavailableError, match="'echo' is still loading"):
        manager.get("echo", "7")  # a version not loaded yet
    assert manager.get("echo", "1").version == 1  # a loaded version serves meanwhile
    manager.loaded = True
    with pytest.raises(NotFoundError, match="no versions to serve"):
        manager.get("arriving")
    with pytest.raises(NotFoundError, match="version 7 is not found"):
        manager.get("echo", "7")
