"""A pipeline's golden raw samples (``samples.json`` beside its ``config.yaml``, see modelport.samples).

Recorded by ``modelport pipeline-golden`` (modelport.serving.pipeline_golden); checked once per built
pipeline, when its steps are first all ready: at server start before the server is ready, or when a
changed ``config.yaml`` rebuilds it. Until then the pipeline is LOADING; a mismatch leaves it FAILED and
the reason names the sample and the first difference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from modelport.errors import ModelportError
from modelport.samples import SAMPLES_FILE, RawSample, mismatch, payload_batch, read_samples
from modelport.serving.pipeline_spec import PipelineSpec
from modelport.serving.types import VersionState
from modelport.tensors import Arrays

__all__ = ["SampleCheck"]

log = logging.getLogger(__name__)

Execute = Callable[[Arrays], Awaitable[Arrays]]


class SampleCheck:
    """Whether a pipeline's raw samples still give their recorded outputs: not yet known, yes, or why not."""

    def __init__(self, spec: PipelineSpec, directory: Path | None, enabled: bool) -> None:
        has_samples = enabled and directory is not None and (directory / SAMPLES_FILE).is_file()
        self.samples: list[RawSample] = read_samples(directory) if has_samples and directory else []
        self.problem: str | None = None if self.samples else ""  # None: not checked yet
        self._input = spec.inputs[0].name if len(spec.inputs) == 1 and spec.inputs[0].datatype == "string" else ""
        if self.samples and not self._input:
            self.problem = "golden samples are raw payloads: the pipeline must take one BYTES input"
        self._task: asyncio.Task[None] | None = None

    def state(self) -> tuple[VersionState, str]:
        """READY once the samples passed (or there are none), LOADING until they ran, FAILED and why."""
        if self.problem is None:
            return VersionState.LOADING, "its golden samples are being checked"
        if self.problem:
            return VersionState.FAILED, f"golden sample check failed: {self.problem}"
        return VersionState.READY, ""

    def start(self, execute: Execute) -> asyncio.Task[None] | None:
        """Run the samples once, in a task of the running loop (None when checked, or no loop runs here)."""
        if self.problem is not None:
            return None
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._run(execute))
            except RuntimeError:
                return None
        return self._task

    async def _run(self, execute: Execute) -> None:
        for sample in self.samples:
            try:
                problem = mismatch(sample.outputs, await execute(payload_batch(self._input, sample.data)))
            except ModelportError as exc:
                problem = f"it failed: {exc.message}"
            if problem:
                self.problem = f"{sample.file} ({sample.content_type}): {problem}"
                log.error("pipeline golden sample check failed: %s", self.problem)
                return
        self.problem = ""
