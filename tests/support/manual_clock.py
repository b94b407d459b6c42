"""ManualClock: a monotonic clock whose sleeps last until the test moves time past their end."""

from __future__ import annotations

import asyncio
import heapq
import itertools


async def settle(rounds: int = 20) -> None:
    """Let every task that can run, run (a fixed number of loop turns; nothing sleeps)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class ManualClock:
    """``now()`` is what the test set; ``sleep(s)`` wakes once ``advance()`` passes ``now + s``.

    Unlike ``FakeClock``, a sleep does not move time itself, so many callers can wait at
    once and the test decides when each wakes (or cancels it first).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._slept = asyncio.Event()

    def now(self) -> float:
        return self.t

    @property
    def sleeping(self) -> int:
        """Sleeps not yet woken nor cancelled."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), future))
        self._slept.set()
        await future

    async def until_sleeping(self, count: int = 1) -> None:
        """Wait (on the loop, not this clock) until ``count`` sleeps are pending."""
        while self.sleeping < count:
            self._slept.clear()
            await self._slept.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleep at its own end, in order, and letting it run."""
        target = self.t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            ends, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, ends)
            if not future.done():
                future.set_result(None)
                await settle()
        self.t = target
        await settle()
