"""FakeClock: a monotonic clock the test moves, so nothing sleeps for real."""

from __future__ import annotations

import asyncio


class FakeClock:
    """``now()`` returns what the test set; ``sleep`` advances it and records the wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)
