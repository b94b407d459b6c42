"""Deadline: the time budget of one logical call, read from the injected clock."""

from __future__ import annotations

import math

from app.resilience.clock import Clock

__all__ = ["Deadline"]


class Deadline:
    """An absolute point on a monotonic clock after which a call must not go on.

    ``Deadline.never(clock)`` is the deadline of a call without a budget. A deadline never
    changes once made, so calls may share one (every call without a budget, say).
    """

    __slots__ = ("_clock", "at", "bounded")

    def __init__(self, clock: Clock, at: float) -> None:
        self._clock = clock
        self.at = at
        #: True when the call has a budget at all. Stored, not a property: every call reads
        #: it (whether to forward the deadline), and a deadline never changes.
        self.bounded = at != math.inf

    @classmethod
    def after(cls, clock: Clock, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now, or none when ``seconds`` is None."""
        return cls.never(clock) if seconds is None else cls(clock, clock.now() + seconds)

    @classmethod
    def never(cls, clock: Clock) -> Deadline:
        """The deadline of a call without a budget."""
        return cls(clock, math.inf)

    def remaining(self) -> float:
        """Seconds left (``inf`` when unbounded, never below zero)."""
        if self.at == math.inf:
            return math.inf
        return max(0.0, self.at - self._clock.now())

    def expired(self) -> bool:
        """True once no time is left."""
        return self.at != math.inf and self._clock.now() >= self.at

    def cap(self, seconds: float) -> float:
        """``seconds`` shortened to what is left of the budget."""
        return min(seconds, self.remaining())

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"
