"""Serving: model repository, runtimes, dynamic batching, one data plane, HTTP adapter."""

from __future__ import annotations

from modelport.serving.native import activate

activate(__path__)  # the compiled hot path when built and current (modelport/serving/native.py)

__all__: list[str] = []
