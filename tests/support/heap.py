"""The process's heap frozen for a timing test: a full collection of it is a pause of tens of ms."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze what is alive (as a server does after start-up) until the block ends.

    Every test module imported so far is in the heap: a full collection falling inside
    a timed window stalls the loop for tens of milliseconds (80 ms measured), which a
    test of latencies, or of a balancer that learns from them, would read as the upstream's.
    What the block itself allocates is still collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
