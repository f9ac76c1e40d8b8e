"""Serving: model repository, runtimes, dynamic batching, one data plane, HTTP adapter."""

from __future__ import annotations

__all__: list[str] = []
