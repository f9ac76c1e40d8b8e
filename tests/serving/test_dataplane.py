"""The data plane's per-version memo for the inference adapters."""

from __future__ import annotations

import pytest

from modelport.errors import ModelNotReadyError, NotFoundError
from modelport.serving.dataplane import DataPlane


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
