"""Bulkhead: a cap on calls in flight plus a bounded, FIFO wait queue."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque

__all__ = ["Bulkhead", "BulkheadRejectedError"]


class BulkheadRejectedError(Exception):
    """The bulkhead is full: every slot is taken and the wait queue is full."""


def _check(max_concurrent: int, max_waiting: int) -> None:
    if max_concurrent < 1 or max_waiting < 0:
        raise ValueError("max_concurrent must be >= 1 and max_waiting >= 0")


class Bulkhead:
    """At most ``max_concurrent`` calls in flight and ``max_waiting`` waiting.

    A call beyond both is rejected at once. A waiting call gives up when its timeout
    (the call's remaining deadline) runs out. Slots go to waiters in arrival order.
    The bulkhead is shared by a client's async calls and its sync twins, which run on
    another event loop, so its state is guarded by a thread lock and waiters on
    another loop are woken through that loop.
    """

    __slots__ = ("_lock", "_waiters", "in_flight", "max_concurrent", "max_waiting", "rejections")

    def __init__(self, max_concurrent: int = 100, max_waiting: int = 100) -> None:
        _check(max_concurrent, max_waiting)
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.rejections = 0
        #: Calls holding a slot now (read-only outside: a plain attribute, not a property,
        #: so that the client's check for a full bulkhead costs no call on every call).
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """True when a call now would be refused: every slot taken and the queue full."""
        return self.in_flight >= self.max_concurrent and len(self._waiters) >= self.max_waiting

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when none is free (or others wait first)."""
        # acquire/release, not ``with``: half the instructions, once per call (see release).
        lock = self._lock
        lock.acquire()
        try:
            if self.in_flight < self.max_concurrent and not self._waiters:
                self.in_flight += 1
                return True
            return False
        finally:
            lock.release()

    async def acquire(self, timeout: float = math.inf) -> None:
        """Take a slot, waiting at most ``timeout`` seconds.

        Raises ``BulkheadRejectedError`` at once when the queue is full, and
        ``TimeoutError`` when the wait outlives ``timeout``.
        """
        with self._lock:
            if self.in_flight < self.max_concurrent and not self._waiters:
                self.in_flight += 1
                return
            if len(self._waiters) >= self.max_waiting or timeout <= 0:
                self.rejections += 1
                raise BulkheadRejectedError
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            if timeout == math.inf:
                await waiter
            else:
                async with asyncio.timeout(timeout):
                    await waiter
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            else:
                return
        # The slot was handed over while the wait was being cancelled: pass it on.
        if waiter.done() and not waiter.cancelled():
            self.release()

    def reconfigure(self, max_concurrent: int, max_waiting: int) -> None:
        """Resize in place; no call in flight or waiting is dropped.

        A larger ``max_concurrent`` admits waiters at once. A smaller one lets the calls
        in flight finish and admits none until they are below it. A smaller
        ``max_waiting`` keeps the calls already waiting; new ones are refused until the
        queue is below it.
        """
        _check(max_concurrent, max_waiting)
        self.max_waiting = max_waiting
        self.set_limit(max_concurrent)

    def set_limit(self, limit: int) -> None:
        """Change ``max_concurrent`` (the adaptive limit does); a higher limit admits waiters now."""
        woken = []
        with self._lock:
            self.max_concurrent = max(1, limit)
            while self._waiters and self.in_flight < self.max_concurrent:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    self.in_flight += 1
                    woken.append(waiter)
        for waiter in woken:
            self._wake(waiter)

    def release(self) -> None:
        """Give a slot back, handing it straight to the oldest live waiter."""
        # acquire/release, not ``with``: ``with`` makes two bound methods and calls
        # ``__exit__`` with three arguments, ~1k instructions more, once per call.
        lock = self._lock
        lock.acquire()
        try:
            # Over a lowered limit, the slot is retired instead of handed on.
            while self._waiters and self.in_flight <= self.max_concurrent:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    break
            else:
                self.in_flight -= 1
                return
        finally:
            lock.release()
        self._wake(waiter)

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        loop = waiter.get_loop()
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._hand_over(waiter)
            return
        try:
            loop.call_soon_threadsafe(self._hand_over, waiter)
        except RuntimeError:
            # Its loop is closed (a sync twin's thread stopped with the call still queued):
            # it can never take the slot, so the slot goes to the next waiter instead.
            self.release()

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            # Cancelled between being picked and being woken: the slot goes on.
            self.release()
        else:
            waiter.set_result(None)

    def __repr__(self) -> str:
        return (
            f"Bulkhead(max_concurrent={self.max_concurrent}, max_waiting={self.max_waiting}, "
            f"in_flight={self.in_flight}, queued={len(self._waiters)})"
        )
