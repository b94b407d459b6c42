"""The breaker on a driven monotonic clock, and aiobreaker's defects kept from leaking."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import aiobreaker
import pytest

from app.resilience.breaker import BreakerRejectedError, CircuitBreakerPolicy
from tests.support.clock import FakeClock


class Boom(Exception):
    """A failure the breaker counts."""


class NotOurFault(Exception):
    """A failure the breaker must not count."""


def make(clock: FakeClock, **kw) -> CircuitBreakerPolicy:
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("reset_timeout_seconds", 10.0)
    return CircuitBreakerPolicy(clock=clock, is_failure=lambda e: not isinstance(e, NotOurFault), **kw)


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


async def trip(breaker: CircuitBreakerPolicy, failures: int = 3) -> None:
    """Fail ``failures`` calls in a row (each raising its own error)."""
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call_through(fail)


async def test_opens_after_threshold_and_the_tripping_call_raises_its_own_error(clock) -> None:
    """The call that trips the breaker raises its own error, not aiobreaker's CircuitBreakerError."""
    breaker = make(clock)
    await trip(breaker)
    assert breaker.state_name == "open"
    with pytest.raises(BreakerRejectedError) as info:
        await breaker.call_through(ok)
    assert info.value.retry_after == pytest.approx(10.0)


async def test_success_resets_the_consecutive_count(clock) -> None:
    """Only consecutive failures open it."""
    breaker = make(clock)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_through(fail)
    assert await breaker.call_through(ok) == "ok"
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_through(fail)
    assert breaker.state_name == "closed"
    with pytest.raises(Boom):
        await breaker.call_through(fail)
    assert breaker.state_name == "open"


async def test_excluded_errors_do_not_count(clock) -> None:
    """Errors the predicate rejects (a caller's 4xx) never open it."""
    breaker = make(clock)

    async def caller_fault() -> None:
        raise NotOurFault

    for _ in range(10):
        with pytest.raises(NotOurFault):
            await breaker.call_through(caller_fault)
    assert breaker.state_name == "closed"


async def test_fails_fast_until_reset_timeout_then_one_trial_closes(clock) -> None:
    """Open for exactly the reset timeout on the injected clock; a good trial closes it."""
    breaker = make(clock)
    await trip(breaker)
    clock.advance(9.99)
    with pytest.raises(BreakerRejectedError):
        await breaker.call_through(ok)
    clock.advance(0.02)
    assert breaker.state_name == "half_open"
    assert await breaker.call_through(ok) == "ok"
    assert breaker.state_name == "closed"


async def test_failed_trial_reopens_for_a_full_period(clock) -> None:
    """A failed trial reopens the breaker, stamped at the trial's failure."""
    breaker = make(clock)
    await trip(breaker)
    clock.advance(10)
    with pytest.raises(Boom):
        await breaker.call_through(fail)
    assert breaker.state_name == "open"
    assert breaker.seconds_until_half_open() == pytest.approx(10.0)


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_half_open_admits_exactly_n_of_100_concurrent_callers(clock, max_calls) -> None:
    """Aiobreaker lets every waiting call through in half-open; this one admits N."""
    breaker = make(clock, half_open_max_calls=max_calls)
    await trip(breaker)
    clock.advance(10)
    release = asyncio.Event()
    admitted = 0

    async def trial() -> str:
        nonlocal admitted
        admitted += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.call_through(trial)) for _ in range(100)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert admitted == max_calls
    assert sum(r == "ok" for r in results) == max_calls
    assert all(isinstance(r, BreakerRejectedError) for r in results if r != "ok")
    assert breaker.state_name == "closed"


async def test_a_cancelled_trial_frees_its_slot(clock) -> None:
    """A trial cancelled mid-flight (CancelledError is invisible to aiobreaker) frees the slot."""
    breaker = make(clock)
    await trip(breaker)
    clock.advance(10)
    task = asyncio.create_task(breaker.call_through(asyncio.sleep, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.call_through(ok) == "ok"


async def test_late_failure_does_not_restart_the_open_period(clock) -> None:
    """A call begun while closed that fails after the breaker opened leaves the timer alone."""
    breaker = make(clock)
    gate = asyncio.Event()

    async def slow_fail() -> None:
        await gate.wait()
        raise Boom

    straggler = asyncio.create_task(breaker.call_through(slow_fail))
    await asyncio.sleep(0)
    await trip(breaker)
    clock.advance(6)
    gate.set()
    with pytest.raises(Boom):
        await straggler
    assert breaker.seconds_until_half_open() == pytest.approx(4.0)


async def test_state_listeners_see_every_transition(clock) -> None:
    """Listeners get (breaker, old, new) on each change."""
    breaker = make(clock, failure_threshold=1)
    seen: list[tuple[str, str]] = []
    breaker.add_state_listener(lambda b, old, new: seen.append((old, new)))
    with pytest.raises(Boom):
        await breaker.call_through(fail)
    clock.advance(10)
    await breaker.call_through(ok)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


@pytest.fixture
def tokyo_time():
    """Run in UTC+9, where aiobreaker's utcnow()/now() mix is off by nine hours."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


async def test_aiobreaker_clock_mix_is_fixed(clock, tokyo_time) -> None:
    """Pins aiobreaker 1.2.0's defect: outside UTC its time-to-half-open is off; ours is not.

    If this first assertion starts failing, aiobreaker fixed the mix and the override can go.
    """
    vanilla = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=30))
    vanilla.open()
    # opened_at is utcnow() but opens_at compares it with now(): in Tokyo, a breaker
    # opened this instant already reports its wait as over, and time_until_open crashes.
    assert vanilla.opens_at is None
    with pytest.raises(TypeError):
        _ = vanilla.time_until_open

    ours = make(clock, failure_threshold=1, reset_timeout_seconds=30)
    with pytest.raises(Boom):
        await ours.call_through(fail)
    assert ours.time_until_open == timedelta(seconds=30)
    assert ours.seconds_until_half_open() == 30
    clock.advance(30)
    assert ours.time_until_open is None
    assert await ours.call_through(ok) == "ok"


async def test_wall_clock_jumps_do_not_move_the_breaker(clock, monkeypatch) -> None:
    """The open period runs on the injected monotonic clock, whatever the wall clock does."""
    breaker = make(clock, failure_threshold=1)
    with pytest.raises(Boom):
        await breaker.call_through(fail)
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # wall clock jumps years ahead
    with pytest.raises(BreakerRejectedError):
        await breaker.call_through(ok)
    assert breaker.seconds_until_half_open() == pytest.approx(10.0)


def test_invalid_options_are_refused() -> None:
    """Thresholds and timeouts must be positive."""
    with pytest.raises(ValueError, match="positive"):
        CircuitBreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError, match="positive"):
        CircuitBreakerPolicy(reset_timeout_seconds=0)


def test_repr_is_useful(clock) -> None:
    """The repr names the state and the options."""
    text = repr(make(clock, name="svc"))
    assert "svc" in text
    assert "closed" in text
    assert "failure_threshold=3" in text
