"""TensorFlow SavedModel runtime: calls the serving signature."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from modelport.cpus import default_threads
from modelport.errors import SourceError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework, rejected_input

__all__ = ["SavedModelRuntime", "op_message"]

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
        elif default := default_threads():  # TensorFlow sizes its pool from the machine's cores
            with contextlib.suppress(RuntimeError):  # TensorFlow already running (another model): as it is
                tf.config.threading.set_intra_op_parallelism_threads(default)
        self.loaded = tf.saved_model.load(str(self.path))
        signature = self.loaded.signatures.get(SERVING_SIGNATURE)
        if signature is None:
            raise SourceError(f"{self.path}: no {SERVING_SIGNATURE!r} signature")
        self.signature = signature
        self.tf = tf

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self.manifest.native(s.name): self.tf.constant(inputs[s.name]) for s in self.manifest.inputs}
        try:
            result = self.signature(**feed)
        except self.tf.errors.InvalidArgumentError as exc:  # a gather index out of range, among others
            raise rejected_input(op_message(exc.message)) from exc
        return {s.name: result[self.manifest.native(s.name)].numpy() for s in self.manifest.outputs}

    def unload(self) -> None:
        self.loaded = None
        self.signature = None


def op_message(text: str) -> str:
    """What a TensorFlow op error says about the values, without boilerplate and node names.

    From ``Graph execution error:`` / ``Detected at node Gather ...`` / ``indices[0,3] = 5000 is not
    in [0, 1000)`` / ``[[{{node Gather}}]] [Op:...]`` (one per line) it keeps the third.
    """
    for line in text.splitlines():
        if not line.strip() or line[0].isspace() or line.startswith(("Graph execution error", "Detected at", "<")):
            continue
        return re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:.*", "", line).strip()
    return ""
