"""Fake runtimes of the tune tests (served by `modelport serve` through a model's config.yaml)."""

from __future__ import annotations

import os

from modelport.runtimes.base import Arrays
from tests.serving.fakes import EchoRuntime


class CrashingRuntime(EchoRuntime):
    """Serves its golden check and a few requests, then takes the whole server process down."""

    calls = 0

    def predict(self, inputs: Arrays) -> Arrays:
        CrashingRuntime.calls += 1
        if CrashingRuntime.calls > 20:
            os._exit(3)
        return super().predict(inputs)
