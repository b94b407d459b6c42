"""The trip rules alone: consecutive failures, and resilience4j's failure and slow-call rates."""

from __future__ import annotations

import pytest

from app.resilience.trip_rules import ConsecutiveFailures, FailureRate
from app.resilience.window import CountWindow, WindowTotals
from tests.support.clock import FakeClock


def rate(clock: FakeClock, **kw) -> FailureRate:
    kw.setdefault("failure_rate", 0.5)
    kw.setdefault("minimum_calls", 4)
    kw.setdefault("slow_call_threshold", None)
    kw.setdefault("slow_call_rate", 1.0)
    return FailureRate(CountWindow(10), clock, **kw)


def test_consecutive_failures_trip_at_the_threshold() -> None:
    """At the threshold, not one before; it keeps no window and never asks for timings."""
    rule = ConsecutiveFailures(3)
    assert (rule.mode, rule.timed) == ("consecutive", False)
    assert [rule.after_failures(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert "threshold=3" in repr(rule)


@pytest.mark.parametrize(
    ("totals", "exceeded"),
    [
        (WindowTotals(calls=3, failures=3), False),  # below minimum_calls
        (WindowTotals(calls=4, failures=1), False),
        (WindowTotals(calls=4, failures=2), True),  # exactly the rate: resilience4j's >=
        (WindowTotals(calls=10, failures=4), False),
    ],
)
def test_failure_rate_thresholds(clock, totals, exceeded) -> None:
    """checkIfThresholdsExceeded: at or above the rate, once minimum_calls are in."""
    assert rate(clock).exceeded(totals) is exceeded


def test_slow_calls_count_only_with_a_threshold(clock) -> None:
    """Slow totals are ignored without a slow_call_threshold, and trip at slow_call_rate with one."""
    slow_heavy = WindowTotals(calls=4, failures=0, slow=4)
    assert not rate(clock).exceeded(slow_heavy)
    assert rate(clock, slow_call_threshold=1.0, slow_call_rate=0.75).exceeded(slow_heavy)
    assert not rate(clock, slow_call_threshold=1.0).exceeded(WindowTotals(calls=4, slow=3))


def test_record_judges_slowness_on_the_clock(clock) -> None:
    """A call slower than the threshold counts as slow; the rule never opens on failures in a row."""
    rule = rate(clock, slow_call_threshold=0.5, slow_call_rate=0.5, minimum_calls=2)
    assert (rule.mode, rule.timed) == ("failure_rate", True)
    assert rule.after_failures(1000) is False
    started = clock.now()
    clock.advance(0.4)
    assert rule.record(failure=False, started=started) is False
    clock.advance(0.2)
    assert rule.record(failure=False, started=started) is True  # 1 of 2 slow: 50%
    rule.clear()
    assert rule.record(failure=False, started=clock.now()) is False
