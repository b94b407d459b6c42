"""The rolling window: counts, error %, percentiles and expiry on a driven clock."""

from __future__ import annotations

from app.observability.rolling import RollingStats


def test_counts_error_percent_and_percentiles(clock) -> None:
    """Outcomes are counted, failures make the error %, latencies give nearest-rank percentiles."""
    stats = RollingStats(window=10, clock=clock)
    for ms in range(1, 101):
        stats.record("success", ms / 1000)
    for _ in range(25):
        stats.record("server_error", 0.5)
    stats.record("client_error", 0.001)
    stats.refused("short_circuited")
    stats.retry()
    snap = stats.snapshot()
    assert snap["requests"] == 127
    assert snap["counts"]["success"] == 100
    assert snap["counts"]["short_circuited"] == 1
    assert snap["error_percent"] == 100 * 26 / 127  # server errors and the refusal; not the 4xx
    assert snap["latency_ms"]["p50"] == 62.0  # rank 63 of 126 samples: 1 ms twice, then 2..100, then 500s
    assert snap["latency_ms"]["max"] == 500.0
    assert snap["retries"] == 1
    assert snap["rejections"] == 1


def test_old_seconds_leave_the_window(clock) -> None:
    """After the window has passed, nothing of it is counted; the series keeps 10 points."""
    stats = RollingStats(window=10, clock=clock)
    stats.record("success", 0.01)
    clock.advance(5)
    stats.record("timeout", 1.0)
    assert stats.snapshot()["requests"] == 2
    clock.advance(6)
    snap = stats.snapshot()
    assert snap["requests"] == 1
    assert snap["counts"]["timeout"] == 1
    assert len(snap["series"]) == 10
    clock.advance(20)
    assert stats.snapshot()["requests"] == 0
    assert stats.snapshot()["latency_ms"]["p99"] is None


def test_an_outcome_of_a_callers_own_error_class_is_counted(clock) -> None:
    """An outcome outside the built-in set (a user's ClientError subclass) counts in the totals, not a KeyError."""
    stats = RollingStats(window=10, clock=clock)
    stats.record("quota_exceeded", 0.01)  # type: ignore[arg-type]
    stats.refused("quota_exceeded")  # type: ignore[arg-type]
    stats.record("success", 0.01)
    snap = stats.snapshot()
    assert snap["requests"] == 3
    assert snap["series"][-1]["requests"] == 3
    assert snap["error_percent"] == 0.0  # not a known failure outcome
