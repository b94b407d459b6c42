"""Client-side rate limit: a token bucket (GCRA) that waits up to the deadline or fails at once."""

from __future__ import annotations

import bisect
import threading
from typing import Literal

from app.resilience.clock import MONOTONIC, Clock

__all__ = ["RateLimiter"]

_EPSILON = 1e-9  # float noise at the burst boundary is no wait at all


class RateLimiter:
    """``rate`` calls per second with bursts of ``burst``, on the injected clock.

    Implemented as GCRA (a token bucket without a refill task): ``reserve_slot()`` books
    the next free slot and says how long to wait for it. In ``wait`` mode a call waits up
    to its deadline; in ``fail`` mode it fails at once, telling when a slot frees.

    A booked slot that is never used (its caller was cancelled, timed out or refused
    further on) is handed back with ``give_back()``. The latest booking rolls the
    schedule back, as if it was never made; an earlier one leaves a free slot that the
    next caller takes while its time has not passed. Calls already waiting keep their
    slots, so no two calls ever start closer than the rate allows.
    """

    __slots__ = ("_clock", "_free", "_interval", "_lock", "_tat", "_tolerance", "burst", "mode", "rate")

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        mode: Literal["wait", "fail"] = "wait",
        clock: Clock = MONOTONIC,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next call at the sustained rate
        self._set(rate, burst, mode)
        # Slots given back below the latest booking, sorted. A slot is the ``tat`` it was
        # booked at; it may be reused while that lies ahead, and lets the schedule roll
        # back over it once every later booking is given back too.
        self._free: list[float] = []

    def _set(self, rate: float, burst: int, mode: Literal["wait", "fail"]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.mode = mode
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval

    def reconfigure(self, rate: float, burst: int, mode: Literal["wait", "fail"]) -> None:
        """New rate, burst and mode from now on; the bucket keeps its tokens.

        The calls booked ahead of now still count, as that many calls, now drained at the
        new rate: a full bucket stays full, and a spent one stays spent unless the burst
        grew (its extra tokens are there at once). Calls already waiting keep the slots
        they booked. Slots given back before the change are dropped: they lie on the old
        schedule, and dropping one only makes the limit stricter for a moment.
        """
        with self._lock:
            now, old_interval = self._clock.now(), self._interval
            self._set(rate, burst, mode)
            if self._tat > now:
                self._tat = now + (self._tat - now) * self._interval / old_interval
            self._free.clear()

    def reserve(self, max_wait: float) -> float:
        """Book a slot within ``max_wait`` seconds; return the wait, or -(time to a slot) if none."""
        return self.reserve_slot(max_wait)[0]

    def reserve_slot(self, max_wait: float) -> tuple[float, float]:
        """Book a slot as ``reserve`` does; also return the slot, for ``give_back``.

        A wait that would use all of ``max_wait`` is refused: the call would have no time left.
        """
        with self._lock:
            now = self._clock.now()
            if self._free:
                booked = self._reuse(now, max_wait)
                if booked is not None:
                    return booked
            tat = max(self._tat, now)
            wait = tat - now - self._tolerance
            if wait <= _EPSILON:
                self._tat = tat + self._interval
                return 0.0, tat
            if self.mode == "fail" or wait >= max_wait:
                return -wait, 0.0
            self._tat = tat + self._interval
            return wait, tat

    def _reuse(self, now: float, max_wait: float) -> tuple[float, float] | None:
        """Book the earliest given-back slot still ahead, or None to book at the end (lock held)."""
        free = self._free
        # Rolling the schedule back to a point an interval or more before now changes
        # nothing (a booking starts from ``max(tat, now)``), so such slots are dropped.
        del free[: bisect.bisect_right(free, now - self._interval)]
        # A slot used later than its time could put two calls closer than the rate allows,
        # so only slots not yet passed are offered.
        index = bisect.bisect_left(free, now)
        if index == len(free):
            return None
        slot = free[index]
        wait = max(0.0, slot - now - self._tolerance)
        if wait <= _EPSILON:
            wait = 0.0
        elif self.mode == "fail" or wait >= max_wait:
            return -wait, 0.0
        del free[index]
        return wait, slot

    def give_back(self, slot: float) -> None:
        """Hand back a slot from ``reserve_slot`` that was never used; call at most once per slot."""
        with self._lock:
            interval, free = self._interval, self._free
            # The same float sum as at booking time, so equality is exact.
            if slot + interval == self._tat:
                self._tat = slot
                while free and free[-1] + interval == self._tat:
                    self._tat = free.pop()
            else:
                bisect.insort(free, slot)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst}, mode={self.mode!r})"
