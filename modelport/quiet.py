"""Keep the ML frameworks' log chatter off stderr: set in the environment before any of them is imported.

The CLI calls ``quiet_frameworks()`` unless ``-v``; a script that imports TensorFlow itself (the demo's
training) calls it first. Converter subprocesses inherit the environment. A user's own values win.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["quiet_frameworks"]

# The ML frameworks' own log settings, in the environment before any of them is imported (converter
# subprocesses inherit them). A user's own values win; -v sets none of them.
_FRAMEWORK_LOG_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow C++: also its ERROR lines, e.g. "failed call to cuInit" without a GPU
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}
_FRAMEWORK_LOGGERS = ("tensorflow", "absl", "jax", "keras", "tf2onnx", "h5py")


def quiet_frameworks() -> None:
    """Keep the frameworks' INFO/WARNING chatter (and CUDA probing errors on CPU machines) off stderr."""
    for name, value in _FRAMEWORK_LOG_ENV.items():
        os.environ.setdefault(name, value)
    for name in _FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # JAX (imported by litert-torch) warns at every fork; modelport forks only to exec a tool right away
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
