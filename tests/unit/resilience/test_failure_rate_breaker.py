"""The failure-rate breaker (resilience4j's rules), growing break durations, isolate and reset."""

from __future__ import annotations

import random

import pytest

from app.resilience.breaker import BreakerRejectedError, CircuitBreakerPolicy
from app.resilience.window import CountWindow, TimeWindow


class BoomError(Exception):
    """Counts as a failure."""


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise BoomError


async def run(breaker: CircuitBreakerPolicy, pattern: str) -> None:
    """``pattern``: 'o' for a success, 'x' for a failure."""
    for step in pattern:
        if step == "o":
            await breaker.call_through(ok)
        else:
            with pytest.raises(BoomError):
                await breaker.call_through(fail)


def rate_breaker(clock, **kw) -> CircuitBreakerPolicy:
    kw.setdefault("window", TimeWindow(30, clock))
    kw.setdefault("minimum_calls", 10)
    kw.setdefault("failure_rate", 0.5)
    return CircuitBreakerPolicy(reset_timeout_seconds=10, clock=clock, **kw)


async def test_opens_at_the_failure_rate_once_minimum_calls_are_seen(clock) -> None:
    """Below minimum_calls nothing opens it; at 50% over 10 calls it opens."""
    breaker = rate_breaker(clock)
    await run(breaker, "xxxxxxxxx")  # 9 failures: under the minimum of 10 calls
    assert breaker.state_name == "closed"
    await run(breaker, "o")  # 10 calls, 90% failed
    assert breaker.state_name == "open"


async def test_interleaved_failures_under_the_rate_keep_it_closed(clock) -> None:
    """40% failures never open it, however long they go on (a consecutive breaker would)."""
    breaker = rate_breaker(clock)
    await run(breaker, "oooxx" * 20)
    assert breaker.state_name == "closed"
    assert breaker.mode == "failure_rate"


async def test_old_buckets_leave_the_time_window(clock) -> None:
    """Failures older than the window no longer count."""
    breaker = rate_breaker(clock)
    await run(breaker, "xxxx")
    clock.advance(31)
    await run(breaker, "oooooo" + "xxxx")  # 10 calls in the window, 40% failed
    assert breaker.state_name == "closed"


async def test_count_window(clock) -> None:
    """A count-based window of 10 looks at the last 10 calls only."""
    breaker = rate_breaker(clock, window=CountWindow(10))
    await run(breaker, "xxxx" + "oooooooooo")  # the failures have slid out
    await run(breaker, "xxxx")  # last 10: 6 ok, 4 failed
    assert breaker.state_name == "closed"
    await run(breaker, "x")  # last 10: 5 failed
    assert breaker.state_name == "open"


async def test_slow_calls_open_it(clock) -> None:
    """With a slow-call threshold, enough slow successes open it too."""
    breaker = rate_breaker(clock, slow_call_threshold=0.5, slow_call_rate=0.6)

    async def slow() -> str:
        clock.advance(0.6)
        return "slow"

    for _ in range(5):
        await breaker.call_through(ok)
    for _ in range(5):
        await breaker.call_through(slow)
    assert breaker.state_name == "closed"  # 50% slow, under 60%
    await breaker.call_through(slow)
    await breaker.call_through(slow)
    assert breaker.state_name == "closed"  # 7 of 12 slow: 58%
    await breaker.call_through(slow)
    assert breaker.state_name == "open"  # 8 of 13: 62%


async def test_break_duration_grows_with_consecutive_openings_up_to_the_cap(clock) -> None:
    """10 s, 20 s, 40 s, then capped at 60 s; a successful trial resets it."""
    breaker = CircuitBreakerPolicy(
        failure_threshold=1,
        reset_timeout_seconds=10,
        clock=clock,
        backoff_factor=2.0,
        max_reset_timeout_seconds=60,
        reset_jitter=0.0,  # exact durations: by default a growing one is jittered by 10%
    )
    durations = []
    for _ in range(5):
        with pytest.raises((BoomError, BreakerRejectedError)):
            await breaker.call_through(fail)
        durations.append(breaker.seconds_until_half_open())
        clock.advance(breaker.seconds_until_half_open())
    assert durations == [10, 20, 40, 60, 60]
    await breaker.call_through(ok)
    assert breaker.state_name == "closed"
    with pytest.raises(BoomError):
        await breaker.call_through(fail)
    assert breaker.seconds_until_half_open() == 10


async def test_jitter_shortens_within_its_fraction(clock) -> None:
    """With 20% jitter each opening lasts between 80% and 100% of its duration."""
    breaker = CircuitBreakerPolicy(
        failure_threshold=1, reset_timeout_seconds=10, clock=clock, backoff_factor=2.0,
        reset_jitter=0.2, rng=random.Random(7),
    )  # fmt: skip
    with pytest.raises(BoomError):
        await breaker.call_through(fail)
    assert 8.0 <= breaker.seconds_until_half_open() <= 10.0


async def test_isolate_holds_it_open_until_reset(clock) -> None:
    """isolate() rejects every call with no retry-after; reset() closes it."""
    breaker = rate_breaker(clock)
    breaker.isolate()
    clock.advance(10_000)
    with pytest.raises(BreakerRejectedError) as info:
        await breaker.call_through(ok)
    assert info.value.retry_after is None
    assert breaker.state_name == "open"
    breaker.reset()
    assert breaker.state_name == "closed"
    assert await breaker.call_through(ok) == "ok"


async def test_invalid_rates_are_refused(clock) -> None:
    """Rates outside (0, 1] are refused."""
    with pytest.raises(ValueError, match="rates"):
        CircuitBreakerPolicy(failure_rate=0, clock=clock)
