"""``modelport pipeline-golden REPO NAME --sample FILE``: record a pipeline's golden raw samples.

The repository is served in-process (no ports, the models' golden checks skipped) and each file goes
through the pipeline as its one BYTES input; the files and the pipeline's outputs on them are written
beside its ``config.yaml`` (``samples/``, ``samples.json``: modelport.samples), replacing earlier ones.
The server checks them when it builds the pipeline (modelport.serving.pipeline_samples).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.samples import RawSample, payload_batch, record_samples
from modelport.serving.pipeline import FORMAT
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.types import InferRequest, VersionState
from modelport.tensors import Arrays

__all__ = ["record_pipeline_samples"]


def record_pipeline_samples(repository: Path, name: str, files: Sequence[Path]) -> list[RawSample]:
    """Run ``files`` through the pipeline ``name`` of the local ``repository``; write and return the samples."""
    payloads = [_read(path) for path in files]
    outputs = iter(asyncio.run(_run(repository, name, payloads)))
    return record_samples(repository / name, files, lambda _: next(outputs))


async def _run(repository: Path, name: str, payloads: list[bytes]) -> list[Arrays]:
    plane = build(ServerSettings(repository=repository, golden_check=False, grpc_port=-1))
    await plane.start()
    try:
        meta = plane.model_metadata(name)
        if meta.format != FORMAT:
            raise InvalidArgumentError(f"{name!r} is a {meta.format} model, not a pipeline (import-mar --sample)")
        if meta.status.state is not VersionState.READY:
            raise InvalidArgumentError(f"pipeline {name!r} is not ready: {meta.status.reason}")
        if len(meta.inputs) != 1 or meta.inputs[0].dtype != "string":
            raise InvalidArgumentError(f"pipeline {name!r} takes tensors: raw samples need one BYTES input")
        requests = [InferRequest(payload_batch(meta.inputs[0].name, data)) for data in payloads]
        return [(await plane.infer(name, None, request, "golden")).outputs for request in requests]
    finally:
        await plane.close()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"sample {path}: cannot read: {exc}") from None
