"""Trip rules: when a closed breaker opens (consecutive failures, or failure and slow-call rates)."""

from __future__ import annotations

from typing import Literal, Protocol

from app.resilience.clock import Clock
from app.resilience.window import OutcomeWindow, WindowTotals

__all__ = ["BreakerMode", "ConsecutiveFailures", "FailureRate", "TripRule"]

BreakerMode = Literal["consecutive", "failure_rate"]


class TripRule(Protocol):
    """What the breaker asks of its rule while closed.

    ``timed``: the breaker times every closed-state call and gives its outcome to
    ``record``; otherwise it only reports failures in a row to ``after_failures``.
    """

    @property
    def mode(self) -> BreakerMode:
        """The rule's name, as the status API shows it."""
        ...

    @property
    def timed(self) -> bool:
        """Whether ``record`` wants every closed-state call."""
        ...

    def after_failures(self, consecutive: int) -> bool:
        """Whether ``consecutive`` counted failures in a row open the breaker."""
        ...

    def record(self, *, failure: bool, started: float) -> bool:
        """Add one call begun at ``started``; whether the thresholds are now exceeded."""
        ...

    def clear(self) -> None:
        """Forget every call (the breaker closed)."""
        ...


class ConsecutiveFailures:
    """Opens after ``threshold`` counted failures in a row, as aiobreaker does."""

    __slots__ = ("threshold",)

    mode: BreakerMode = "consecutive"
    timed = False

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def after_failures(self, consecutive: int) -> bool:
        """True at ``threshold`` failures in a row."""
        return consecutive >= self.threshold

    def record(self, *, failure: bool, started: float) -> bool:
        """Never called: this rule keeps no window."""
        return False

    def clear(self) -> None:
        """Nothing to forget: the count is the engine's and restarts on close."""

    def __repr__(self) -> str:
        return f"ConsecutiveFailures(threshold={self.threshold})"


class FailureRate:
    """resilience4j's ``checkIfThresholdsExceeded`` over a sliding window of outcomes.

    Once the window holds ``minimum_calls``, it opens when failures / calls reaches
    ``failure_rate``, or, with a ``slow_call_threshold`` (seconds), when calls slower
    than it / calls reaches ``slow_call_rate``.
    """

    __slots__ = ("_clock", "failure_rate", "minimum_calls", "slow_call_rate", "slow_call_threshold", "window")

    mode: BreakerMode = "failure_rate"
    timed = True

    def __init__(
        self,
        window: OutcomeWindow,
        clock: Clock,
        *,
        failure_rate: float,
        minimum_calls: int,
        slow_call_threshold: float | None,
        slow_call_rate: float,
    ) -> None:
        self.window = window
        self._clock = clock
        self.failure_rate = failure_rate
        self.minimum_calls = minimum_calls
        self.slow_call_threshold = slow_call_threshold
        self.slow_call_rate = slow_call_rate

    def after_failures(self, consecutive: int) -> bool:
        """Never: only the rates open it."""
        return False

    def record(self, *, failure: bool, started: float) -> bool:
        """Add one call to the window; whether a rate is now at its threshold."""
        threshold = self.slow_call_threshold
        # The clock is read only when slowness is judged.
        slow = threshold is not None and self._clock.now() - started > threshold
        return self.exceeded(self.window.record(failure=failure, slow=slow))

    def exceeded(self, totals: WindowTotals) -> bool:
        """Whether ``totals`` reach a threshold (never below ``minimum_calls``)."""
        return totals.calls >= self.minimum_calls and (
            totals.failures >= self.failure_rate * totals.calls
            or (self.slow_call_threshold is not None and totals.slow >= self.slow_call_rate * totals.calls)
        )

    def clear(self) -> None:
        """Forget every call."""
        self.window.clear()

    def __repr__(self) -> str:
        return (
            f"FailureRate(window={type(self.window).__name__}, failure_rate={self.failure_rate}, "
            f"minimum_calls={self.minimum_calls}, slow_call_threshold={self.slow_call_threshold}, "
            f"slow_call_rate={self.slow_call_rate})"
        )
