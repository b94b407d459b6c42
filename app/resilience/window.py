"""Sliding windows of call outcomes for the failure-rate breaker: by time (buckets) or by count."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from app.resilience.clock import Clock

__all__ = ["CountWindow", "OutcomeWindow", "TimeWindow", "WindowTotals"]


class WindowTotals:
    """Calls, failures and slow calls seen in a window."""

    __slots__ = ("calls", "failures", "slow")

    def __init__(self, calls: int = 0, failures: int = 0, slow: int = 0) -> None:
        self.calls = calls
        self.failures = failures
        self.slow = slow

    def __repr__(self) -> str:
        return f"WindowTotals(calls={self.calls}, failures={self.failures}, slow={self.slow})"


class OutcomeWindow(Protocol):
    """What the breaker needs from a window."""

    @property
    def shape(self) -> tuple[object, ...]:
        """Its kind and size: a breaker reconfigured with a window of this shape keeps this one."""
        ...

    @property
    def totals(self) -> WindowTotals:
        """The calls, failures and slow calls it holds now."""
        ...

    def record(self, *, failure: bool, slow: bool) -> WindowTotals:
        """Add one call and return the window's totals."""
        ...

    def clear(self) -> None:
        """Forget every call."""
        ...


class TimeWindow:
    """The last ``seconds`` in ``buckets`` buckets, as resilience4j's time-based window.

    Totals are kept running, so recording is O(1) apart from expiring old buckets.
    """

    __slots__ = ("_bucket_seconds", "_buckets", "_clock", "_totals", "buckets", "seconds")

    def __init__(self, seconds: float, clock: Clock, buckets: int = 10) -> None:
        self.seconds = seconds
        self.buckets = buckets
        self._bucket_seconds = seconds / buckets
        self._clock = clock
        self._buckets: deque[tuple[int, WindowTotals]] = deque()
        self._totals = WindowTotals()

    @property
    def shape(self) -> tuple[object, ...]:
        """``("time", seconds, buckets)``."""
        return ("time", self.seconds, self.buckets)

    @property
    def totals(self) -> WindowTotals:
        """The running totals (as of the latest call: old buckets expire at the next one)."""
        return self._totals

    def record(self, *, failure: bool, slow: bool) -> WindowTotals:
        """Add one call now."""
        index = int(self._clock.now() // self._bucket_seconds)
        buckets, totals = self._buckets, self._totals
        while buckets and buckets[0][0] <= index - self.buckets:
            _, old = buckets.popleft()
            totals.calls -= old.calls
            totals.failures -= old.failures
            totals.slow -= old.slow
        if not buckets or buckets[-1][0] != index:
            buckets.append((index, WindowTotals()))
        bucket = buckets[-1][1]
        bucket.calls += 1
        totals.calls += 1
        if failure:
            bucket.failures += 1
            totals.failures += 1
        if slow:
            bucket.slow += 1
            totals.slow += 1
        return totals

    def clear(self) -> None:
        """Forget every call."""
        self._buckets.clear()
        self._totals = WindowTotals()


class CountWindow:
    """The last ``size`` calls, as resilience4j's count-based window."""

    __slots__ = ("_ring", "_totals", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring: deque[tuple[bool, bool]] = deque()
        self._totals = WindowTotals()

    @property
    def shape(self) -> tuple[object, ...]:
        """``("count", size)``."""
        return ("count", self.size)

    @property
    def totals(self) -> WindowTotals:
        """The running totals over the last ``size`` calls."""
        return self._totals

    def record(self, *, failure: bool, slow: bool) -> WindowTotals:
        """Add one call, dropping the oldest beyond ``size``."""
        ring, totals = self._ring, self._totals
        if len(ring) == self.size:
            old_failure, old_slow = ring.popleft()
            totals.calls -= 1
            totals.failures -= old_failure
            totals.slow -= old_slow
        ring.append((failure, slow))
        totals.calls += 1
        totals.failures += failure
        totals.slow += slow
        return totals

    def clear(self) -> None:
        """Forget every call."""
        self._ring.clear()
        self._totals = WindowTotals()
