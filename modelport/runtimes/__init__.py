"""Runtimes: one module per artifact format behind one small protocol.

A runtime loads one model version directory, predicts on numpy arrays keyed by
the manifest's tensor names, and unloads. Frameworks are imported inside each
runtime module, which is looked up lazily by format name, so importing this
package loads no ML framework. Export validates artifacts with these same
runtimes, so what passed the parity gate is exactly what the server runs.
"""

from __future__ import annotations

from modelport.runtimes.base import Runtime, RuntimeOptions, open_runtime, runtime_class

__all__ = ["Runtime", "RuntimeOptions", "open_runtime", "runtime_class"]
