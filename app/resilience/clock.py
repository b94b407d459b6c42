"""The monotonic clock every time-dependent policy reads, injectable for tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "MONOTONIC", "MonotonicClock"]


class Clock(Protocol):
    """A monotonic time source in seconds, and a way to wait on it."""

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``.

    ``now`` is ``time.monotonic`` itself, taken when this module is imported: patching
    ``time.monotonic`` later does not reach it. A test that drives time injects a clock
    of its own (``clock=``), as every policy takes one.
    """

    __slots__ = ()

    #: Seconds from ``time.monotonic``, called as it is: every call reads the clock two to
    #: four times, and a method of ours around it would be a Python frame each time.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "MonotonicClock()"


MONOTONIC: Clock = MonotonicClock()
