"""Gradient2: the limit falls when latency rises under load, and rises again when it recovers."""

from __future__ import annotations

from app.resilience.adaptive import Gradient2Limit


def test_limit_falls_under_rising_latency_and_recovers() -> None:
    """Fast, then 5x slower under full load, then fast again."""
    limit = Gradient2Limit(initial_limit=50, min_limit=5, max_limit=200)
    for _ in range(300):
        limit.sample(0.010, in_flight=limit.current)
    steady = limit.current
    for _ in range(60):
        limit.sample(0.050, in_flight=limit.current)
    congested = limit.current
    for _ in range(300):
        limit.sample(0.010, in_flight=limit.current)
    recovered = limit.current
    assert congested < steady / 2
    assert congested >= 5
    assert recovered > congested * 2


def test_limit_holds_when_far_from_used() -> None:
    """Under half the limit in use there is no evidence: the limit stays."""
    limit = Gradient2Limit(initial_limit=40)
    for _ in range(100):
        limit.sample(1.0, in_flight=3)
    assert limit.current == 40


def test_limit_stays_within_bounds() -> None:
    """However bad the latency, the limit stays in [min, max]."""
    limit = Gradient2Limit(initial_limit=10, min_limit=4, max_limit=12)
    for rtt in [0.01] * 200 + [10.0] * 200:
        limit.sample(rtt, in_flight=limit.current)
        assert 4 <= limit.current <= 12
