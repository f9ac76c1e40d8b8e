"""Run ``modelport`` as a user does: a separate process, from the user's directory, with relative paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the log settings `modelport` chooses (a test that ran `main()` in this process left them set):
# a user's shell does not have them, so neither does the child
FRAMEWORK_LOG_VARIABLES = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "GLOG_minloglevel", "TF_CPP_MAX_VLOG_LEVEL")


def run_modelport(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m modelport.cli ARGS`` in ``cwd``, importing this checkout's modelport."""
    env = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_LOG_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "modelport.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
