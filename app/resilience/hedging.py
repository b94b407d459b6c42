"""Hedging: a backup attempt when the first is slow; the first success wins (Polly, Finagle)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["HedgingPolicy", "LatencyTracker"]

T = TypeVar("T")


class LatencyTracker:
    """Recent successful attempt latencies, for a percentile-timed hedge (Finagle's backup requests)."""

    __slots__ = ("_cached", "_lock", "_samples", "_since", "min_samples")

    def __init__(self, size: int = 1000, min_samples: int = 20) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._cached: dict[float, float] = {}
        self._since = 0
        self.min_samples = min_samples

    def add(self, seconds: float) -> None:
        """One successful attempt's latency."""
        with self._lock:
            self._samples.append(seconds)
            self._since += 1
            if self._since >= 50:  # percentiles are re-sorted every 50 samples, not per call
                self._cached.clear()
                self._since = 0

    def percentile(self, pct: float) -> float | None:
        """The ``pct`` percentile, or None until there are ``min_samples``."""
        with self._lock:
            if len(self._samples) < self.min_samples:
                return None
            value = self._cached.get(pct)
            if value is None:
                ordered = sorted(self._samples)
                value = ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
                self._cached[pct] = value
            return value


class HedgingPolicy:
    """Starts up to ``max_attempts`` concurrent attempts, each ``delay`` after the last.

    The delay is the tracker's ``percentile`` latency once known, else ``delay_seconds``.
    The first success wins and the others are cancelled (their connections closed). A
    failure that comes while another attempt is still running waits for that one.
    """

    __slots__ = ("delay_seconds", "max_attempts", "percentile", "tracker")

    def __init__(
        self, delay_seconds: float = 0.1, max_attempts: int = 2, percentile: float | None = None
    ) -> None:
        self.tracker = LatencyTracker()
        self.reconfigure(delay_seconds, max_attempts, percentile)

    def reconfigure(self, delay_seconds: float, max_attempts: int, percentile: float | None) -> None:
        """Take new settings in place; the latencies seen so far stay (the percentile's samples).

        A hedged call in flight keeps the number of attempts it started with.
        """
        if delay_seconds <= 0 or max_attempts < 2:
            raise ValueError("hedging needs delay_seconds > 0 and max_attempts >= 2")
        self.delay_seconds = delay_seconds
        self.max_attempts = max_attempts
        self.percentile = percentile

    def delay(self) -> float:
        """How long an attempt runs before the next one starts."""
        if self.percentile is not None:
            observed = self.tracker.percentile(self.percentile)
            if observed is not None:
                return observed
        return self.delay_seconds

    async def run(self, start: Callable[[], Awaitable[T]], may_hedge: Callable[[], bool]) -> T:
        """Run ``start()`` and hedge it while ``may_hedge()`` allows (it counts the hedge)."""
        tasks: set[asyncio.Future[T]] = {asyncio.ensure_future(start())}
        started, max_attempts = 1, self.max_attempts
        first_error: BaseException | None = None
        task: asyncio.Future[T] | None = None
        done: set[asyncio.Future[T]] = set()
        try:
            while True:
                wait = self.delay() if started < max_attempts else None
                done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tasks.discard(task)
                    error = task.exception()
                    if error is None:
                        return task.result()
                    first_error = first_error or error
                if not tasks:
                    assert first_error is not None  # noqa: S101 - every attempt ended in an error
                    raise first_error
                if not done and started < max_attempts and may_hedge():
                    tasks.add(asyncio.ensure_future(start()))
                    started += 1
        finally:
            # The error raised holds this frame (its traceback), and its task holds it: this
            # frame lets go of both, or each hedged failure is a reference cycle for the gc.
            first_error = error = task = None
            done = set()
            for task in tasks:
                task.cancel()
            if tasks:
                # Wait for the losers to unwind, so their connections are closed, not leaked.
                await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"HedgingPolicy(delay_seconds={self.delay_seconds}, max_attempts={self.max_attempts}, "
            f"percentile={self.percentile})"
        )
