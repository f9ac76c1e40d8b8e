"""Keep the ML frameworks' log chatter off stderr: set in the environment before any of them is imported.

The CLI calls ``quiet_frameworks()`` unless ``-v``; a script that imports TensorFlow itself (the demo's
training) calls it first. Converter subprocesses inherit the environment. A user's own values win.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from types import ModuleType

__all__ = ["import_quietly", "quiet_frameworks"]

# The ML frameworks' own log settings, in the environment before any of them is imported (converter
# subprocesses inherit them). A user's own values win; -v sets none of them.
_FRAMEWORK_LOG_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow C++: also its ERROR lines, e.g. "failed call to cuInit" without a GPU
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}
_FRAMEWORK_LOGGERS = ("tensorflow", "absl", "jax", "keras", "tf2onnx", "h5py")


_quiet = False  # quiet_frameworks() ran: the CLI without -v


def quiet_frameworks() -> None:
    """Keep the frameworks' INFO/WARNING chatter (and CUDA probing errors on CPU machines) off stderr."""
    global _quiet
    _quiet = True
    for name, value in _FRAMEWORK_LOG_ENV.items():
        os.environ.setdefault(name, value)
    for name in _FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # JAX (imported by litert-torch) warns at every fork; modelport forks only to exec a tool right away
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def import_quietly(name: str) -> ModuleType:
    """Import ``name`` (TensorFlow, or a package that imports it) with stderr's file descriptor silenced once
    ``quiet_frameworks()`` ran: TensorFlow's C++ writes some lines (oneDNN, the CUDA probe) before it reads
    ``TF_CPP_MIN_LOG_LEVEL``, which is also no guide here (a parent process that imported TensorFlow passes on
    the ``1`` TensorFlow sets); ``0`` asks for them. Call it where nothing else writes to stderr meanwhile."""
    if not _quiet or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or name in sys.modules:
        return importlib.import_module(name)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                return importlib.import_module(name)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
