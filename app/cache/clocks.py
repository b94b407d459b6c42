"""The wall clock the cache reads for Date comparisons, injectable like the monotonic one."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_WALL_CLOCK", "SystemWallClock", "WallClock"]


class WallClock(Protocol):
    """Seconds since the epoch: what HTTP dates (Date, Expires, Last-Modified) are compared with."""

    def time(self) -> float:
        """The current wall time in seconds since the epoch."""
        ...


class SystemWallClock:
    """The real wall clock: ``time.time``."""

    __slots__ = ()

    def time(self) -> float:
        """Seconds from ``time.time``."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemWallClock()"


SYSTEM_WALL_CLOCK: WallClock = SystemWallClock()
