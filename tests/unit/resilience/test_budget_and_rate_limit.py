"""The retry budget (Finagle) and the client-side rate limiter (GCRA), on a driven clock."""

from __future__ import annotations

import pytest

from app.resilience.budget import RetryBudget
from app.resilience.ratelimit import RateLimiter


def test_budget_floor_then_ratio(clock) -> None:
    """With no traffic the floor allows min_per_second * window retries; each request adds ratio."""
    budget = RetryBudget(ratio=0.2, window_seconds=10, min_per_second=1, clock=clock)
    assert sum(budget.try_retry() for _ in range(20)) == 10
    assert budget.exhausted == 10
    for _ in range(50):
        budget.request()
    assert sum(budget.try_retry() for _ in range(20)) == 10  # 0.2 * 50 more


def test_budget_refills_as_the_window_slides(clock) -> None:
    """Retries older than the window stop counting."""
    budget = RetryBudget(ratio=0.0, window_seconds=10, min_per_second=0.5, clock=clock)
    assert sum(budget.try_retry() for _ in range(10)) == 5
    clock.advance(10)
    assert budget.try_retry()
    assert budget.balance == pytest.approx(4)


def test_rate_limiter_burst_then_spacing(clock) -> None:
    """A burst of ``burst`` passes at once; after that calls are spaced 1/rate apart."""
    limiter = RateLimiter(rate=10, burst=3, mode="wait", clock=clock)
    assert [limiter.reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.reserve(1.0) == pytest.approx(0.1)
    assert limiter.reserve(1.0) == pytest.approx(0.2)
    clock.advance(10)
    assert limiter.reserve(1.0) == 0.0


def test_rate_limiter_fail_mode_and_max_wait(clock) -> None:
    """Fail mode never waits; wait mode refuses a wait longer than the deadline allows."""
    failing = RateLimiter(rate=2, burst=1, mode="fail", clock=clock)
    assert failing.reserve(5.0) == 0.0
    assert failing.reserve(5.0) == pytest.approx(-0.5)  # refused: a slot frees in 0.5 s
    waiting = RateLimiter(rate=2, burst=1, mode="wait", clock=clock)
    waiting.reserve(5.0)
    assert waiting.reserve(0.1) == pytest.approx(-0.5)
    assert waiting.reserve(1.0) == pytest.approx(0.5)


def test_invalid_settings_are_refused(clock) -> None:
    """A rate must be positive."""
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, clock=clock)
    with pytest.raises(ValueError, match="budget"):
        RetryBudget(ratio=-1, clock=clock)
