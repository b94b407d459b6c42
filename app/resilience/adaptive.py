"""Adaptive concurrency limit, Gradient2-style (Netflix concurrency-limits)."""

from __future__ import annotations

import math
import threading

__all__ = ["Gradient2Limit"]


class Gradient2Limit:
    """Moves a concurrency limit from the ratio of long-term to current round-trip time.

    Each sample: ``gradient = clamp(tolerance * long_rtt / short_rtt, 0.5, 1)``;
    ``new = limit * gradient + queue_size``; ``limit`` moves toward ``new`` by
    ``smoothing``, within ``[min_limit, max_limit]``. ``long_rtt`` is a slow average
    (the no-load baseline); ``short_rtt`` a fast one. When latency rises under load the
    gradient falls below 1 and the limit shrinks; when it recovers the queue term grows
    it again. While far below the limit (under half used) the limit holds: there is no
    evidence either way.
    """

    __slots__ = (
        "_lock", "_long_rtt", "_short_rtt", "limit", "long_window", "max_limit", "min_limit",
        "short_window", "smoothing", "tolerance",
    )  # fmt: skip

    def __init__(
        self,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        *,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
        short_window: int = 10,
    ) -> None:
        self.limit = float(initial_limit)
        self.long_window = long_window
        self.short_window = short_window
        self._long_rtt = 0.0
        self._short_rtt = 0.0
        self._lock = threading.Lock()
        self.reconfigure(initial_limit, min_limit, max_limit, smoothing=smoothing, tolerance=tolerance)

    def reconfigure(
        self, initial_limit: int, min_limit: int, max_limit: int, *, smoothing: float, tolerance: float
    ) -> None:
        """Take new settings in place; what was learned stays (the limit, the RTT averages).

        The limit is kept, moved into the new ``[min_limit, max_limit]`` if it lies
        outside; ``initial_limit`` is only where a new limit starts, so it is checked, not used.
        """
        if not 1 <= min_limit <= initial_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= initial_limit <= max_limit")
        with self._lock:
            self.min_limit = min_limit
            self.max_limit = max_limit
            self.smoothing = smoothing
            self.tolerance = tolerance
            self.limit = max(float(min_limit), min(float(max_limit), self.limit))

    @property
    def current(self) -> int:
        """The limit as a whole number of calls."""
        return int(self.limit)

    def sample(self, rtt: float, in_flight: int) -> int:
        """Feed one completed call's round-trip time; returns the new limit."""
        with self._lock:
            if self._long_rtt == 0.0:
                self._long_rtt = self._short_rtt = rtt
            else:
                self._short_rtt += (rtt - self._short_rtt) * 2 / (self.short_window + 1)
                self._long_rtt += (rtt - self._long_rtt) * 2 / (self.long_window + 1)
            short, long_ = self._short_rtt, self._long_rtt
            if long_ / short > 2:
                # Recovering from a slow period: let the baseline come down faster.
                self._long_rtt = long_ = long_ * 0.95
            if in_flight < self.limit / 2:
                return self.current
            gradient = max(0.5, min(1.0, self.tolerance * long_ / short))
            new_limit = self.limit * gradient + math.sqrt(self.limit)
            new_limit = self.limit * (1 - self.smoothing) + new_limit * self.smoothing
            self.limit = max(float(self.min_limit), min(float(self.max_limit), new_limit))
            return self.current

    def __repr__(self) -> str:
        return (
            f"Gradient2Limit(limit={self.limit:.1f}, min_limit={self.min_limit}, max_limit={self.max_limit})"
        )
