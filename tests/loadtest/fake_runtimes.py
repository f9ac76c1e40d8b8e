"""Fake runtimes of the load-test tests (served by `modelport serve` through a model's config.yaml)."""

from __future__ import annotations

from tests.serving.fakes import EchoRuntime


class WordyLoadFailure(EchoRuntime):
    """Fails to load with a several-line message, as real runtimes' errors often are."""

    def load(self) -> None:
        raise ValueError("the model file is corrupt\n  at byte 1234 of model.onnx\n  (the export was interrupted?)")
