"""What the renderers share that is not about any one kernel tool."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: a full render allocates some 300,000
    containers, and CPython's collector, triggered by them, walked the caller's whole
    heap again and again: 40 % of a 10,000 x 10 render's time, measured.  What a render
    allocates holds no cycle, so nothing is left for the collector.  The previous state
    is restored, also when the collector was off already.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
