"""Process memory: hand back to the OS the heap pages that loading or unloading a model freed, and settle the
collector once what lives for good is loaded (:func:`settle_heap`).

Loading a model leaves most of what the framework needed only while loading (the parsed model file, graph
rewrites, the golden check's tensors) freed but still held by the C allocator: glibc returns free heap pages
only from the top of a heap, so a 45 MB ONNX model left about 60 MB the server kept for good
(benchmarks/serving.py, ResNet-18). ``malloc_trim(0)`` returns every free page at once.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable

__all__ = ["GC_YOUNG", "release_freed_memory", "settle_heap"]

GC_YOUNG = 10_000  # allocations between young collections once settled; Python's default: 700


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc); False where the C library cannot (musl, macOS)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    return trim


def settle_heap(young: int = GC_YOUNG) -> None:
    """Once what lives for good is loaded (the server's frameworks and models, the exporter process's SDK): freeze
    it (full collections never rescan it), and collect the young generation every ``young`` allocations instead
    of Python's 700 (a request makes a few dozen container objects, nearly all freed by their reference counts:
    each young collection mostly re-walks the requests in flight, so fewer of them cost less)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *gc.get_threshold()[1:])
