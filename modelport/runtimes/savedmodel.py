"""TensorFlow SavedModel runtime: calls the serving signature."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.cpus import default_threads
from modelport.errors import InvalidArgumentError, SourceError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework, rejected_input

__all__ = ["SavedModelRuntime", "SignatureDef", "op_message"]

SERVING_SIGNATURE = "serving_default"
# TensorFlow fails to decode an op's error message that quotes non-UTF-8 input bytes (a serialized tf.Example it
# could not parse): the op refused the values, in words Python cannot read
_UNDECODABLE = "an op could not read them (its error message quotes bytes that are not UTF-8)"

SignatureTensor = tuple[str, str, tuple[int, ...] | None, str]
"""A signature's tensor: its key, dtype (``float32``, ``string``...), shape (None: unknown rank), graph name."""


@dataclass(frozen=True)
class SignatureDef:
    """One SignatureDef of the SavedModel, as ``saved_model.pb`` records it."""

    name: str
    method_name: str
    inputs: tuple[SignatureTensor, ...]
    outputs: tuple[SignatureTensor, ...]


class SavedModelRuntime:
    """Runs the ``serving_default`` signature of a SavedModel directory."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = (directory / manifest.artifact).parent  # artifact is saved_model.pb (TF Serving layout)
        self.manifest = manifest
        self.options = options
        self.loaded: Any = None
        self.signature: Any = None
        self._signature_defs: dict[str, SignatureDef] = {}

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
        self._signature_defs = _read_signature_defs(self.path, tf, self.loaded.signatures)

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self.manifest.native(s.name): self.tf.constant(inputs[s.name]) for s in self.manifest.inputs}
        try:
            result = self.signature(**feed)
        except self.tf.errors.InvalidArgumentError as exc:  # a gather index out of range, among others
            raise rejected_input(op_message(exc.message)) from exc
        except UnicodeDecodeError as exc:  # an op's error that quotes the request's bytes (ParseExample's)
            raise rejected_input(_UNDECODABLE) from exc
        return {s.name: result[self.manifest.native(s.name)].numpy() for s in self.manifest.outputs}

    def signatures(self) -> tuple[SignatureDef, ...]:
        """Every SignatureDef of the SavedModel (TF Serving's metadata; its Predict, Classify and Regress by name)."""
        return tuple(self._signature_defs[k] for k in sorted(self._signature_defs))

    def run_signature(self, name: str, inputs: Arrays) -> Arrays:
        """Run signature ``name`` on inputs keyed by its keys; outputs by its keys. Safe beside ``predict`` on
        other threads (a TensorFlow function is)."""
        signature = self.loaded.signatures.get(name)
        if signature is None:
            raise InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')
        feed = {k: self.tf.constant(v) for k, v in inputs.items()}
        try:
            result = signature(**feed)
        except UnicodeDecodeError as exc:  # (a ValueError)
            raise rejected_input(_UNDECODABLE) from exc
        except (self.tf.errors.InvalidArgumentError, TypeError, ValueError) as exc:  # wrong values, keys or dtypes
            raise rejected_input(op_message(getattr(exc, "message", str(exc)))) from exc
        return {k: v.numpy() for k, v in result.items()}

    def unload(self) -> None:
        self.loaded = None
        self.signature = None


def _read_signature_defs(path: Path, tf: Any, functions: Any) -> dict[str, SignatureDef]:
    """The SignatureDefs of the serving MetaGraph (tag ``serve``) of ``saved_model.pb``, their tensors keyed as the
    loaded signature functions take and answer them (``dense.input-1`` is argument ``dense_input_1``)."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString((path / "saved_model.pb").read_bytes())
    graphs = [g for g in model.meta_graphs if "serve" in g.meta_info_def.tags] or list(model.meta_graphs)
    if not graphs:
        return {}

    def tensors(infos: Any, keys: set[str]) -> tuple[SignatureTensor, ...]:
        return tuple(
            (_key(key, keys), _dtype_name(tf, info.dtype), _shape(info), info.name)
            for key, info in sorted(infos.items())
        )

    found = {}
    for name, d in graphs[0].signature_def.items():
        function = functions.get(name)
        if function is None:  # __saved_model_init_op: not a signature a client calls
            continue
        inputs, outputs = set(function.structured_input_signature[1]), set(function.structured_outputs)
        found[name] = SignatureDef(name, d.method_name, tensors(d.inputs, inputs), tensors(d.outputs, outputs))
    return found


def _key(key: str, keys: set[str]) -> str:
    """A SignatureDef key as the loaded function names it (TensorFlow makes argument names identifiers)."""
    if key in keys:
        return key
    clean = re.sub(r"[^0-9A-Za-z_]", "_", key)
    return clean if clean in keys else key


def _dtype_name(tf: Any, dtype: int) -> str:
    name = str(tf.dtypes.as_dtype(dtype).name)
    return {"half": "float16", "float": "float32", "double": "float64"}.get(name, name)


def _shape(info: Any) -> tuple[int, ...] | None:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(int(d.size) for d in info.tensor_shape.dim)


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
