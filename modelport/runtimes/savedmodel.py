"""TensorFlow SavedModel runtime: calls the serving signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.errors import SourceError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework

__all__ = ["SavedModelRuntime"]

SERVING_SIGNATURE = "serving_default"


class SavedModelRuntime:
    """Runs the ``serving_default`` signature of a SavedModel directory."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = (directory / manifest.artifact).parent  # artifact is saved_model.pb (TF Serving layout)
        self.manifest = manifest
        self.options = options
        self.loaded: Any = None
        self.signature: Any = None

    def load(self) -> None:
        tf = import_framework("tensorflow", "tf")
        if self.options.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(self.options.intra_op_threads)
        self.loaded = tf.saved_model.load(str(self.path))
        signature = self.loaded.signatures.get(SERVING_SIGNATURE)
        if signature is None:
            raise SourceError(f"{self.path}: no {SERVING_SIGNATURE!r} signature")
        self.signature = signature
        self.tf = tf

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self.manifest.native(s.name): self.tf.constant(inputs[s.name]) for s in self.manifest.inputs}
        result = self.signature(**feed)
        return {s.name: result[self.manifest.native(s.name)].numpy() for s in self.manifest.outputs}

    def unload(self) -> None:
        self.loaded = None
        self.signature = None
