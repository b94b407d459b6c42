"""Client-side rate limit: a token bucket (GCRA) that waits up to the deadline or fails at once."""

from __future__ import annotations

import threading
from typing import Literal

from app.resilience.clock import MONOTONIC, Clock

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` calls per second with bursts of ``burst``, on the injected clock.

    Implemented as GCRA (a token bucket without a refill task): ``reserve()`` books the
    next free slot and says how long to wait for it. In ``wait`` mode a call waits up to
    its deadline; in ``fail`` mode it fails at once, telling when a slot frees.
    """

    __slots__ = ("_clock", "_interval", "_lock", "_tat", "burst", "mode", "rate")

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        mode: Literal["wait", "fail"] = "wait",
        clock: Clock = MONOTONIC,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.mode = mode
        self._interval = 1.0 / rate
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next call at the sustained rate

    def reserve(self, max_wait: float) -> float:
        """Book a slot within ``max_wait`` seconds; return the wait, or -(time to a slot) if none."""
        with self._lock:
            now = self._clock.now()
            tat = max(self._tat, now)
            wait = tat - now - (self.burst - 1) * self._interval
            if wait <= 1e-9:  # float noise at the burst boundary is no wait at all
                self._tat = tat + self._interval
                return 0.0
            if self.mode == "fail" or wait > max_wait:
                return -wait
            self._tat = tat + self._interval
            return wait

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst}, mode={self.mode!r})"
