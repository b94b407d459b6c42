"""Neutral outcomes (our own shutdown, a cancellation) change nothing in the breaker."""

from __future__ import annotations

import asyncio

import pytest

from app.resilience.breaker import BreakerRejectedError, CircuitBreakerPolicy
from app.resilience.window import CountWindow, WindowTotals


class Boom(Exception):
    """A failure the breaker counts."""


class Closing(Exception):
    """Our own shutdown: neutral."""


class CallerFault(Exception):
    """A caller's 4xx: not a failure, so a success (the upstream answered)."""


def counts(exc: BaseException) -> bool:
    return isinstance(exc, Boom | Closing)  # Closing also counts, to show neutral is asked first


def neutral(exc: BaseException) -> bool:
    return isinstance(exc, Closing)


def make(clock, **kw) -> CircuitBreakerPolicy:
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("reset_timeout_seconds", 10.0)
    return CircuitBreakerPolicy(clock=clock, is_failure=counts, is_neutral=neutral, **kw)


def raising(exc: type[Exception]):
    async def call() -> None:
        raise exc

    return call


async def ok() -> str:
    return "ok"


async def run(breaker: CircuitBreakerPolicy, *errors: type[Exception]) -> None:
    for exc in errors:
        with pytest.raises(exc):
            await breaker.call_through(raising(exc))


class SpyWindow:
    """A count window that remembers what it was given."""

    def __init__(self, size: int) -> None:
        self.inner = CountWindow(size)
        self.recorded: list[tuple[bool, bool]] = []

    def record(self, *, failure: bool, slow: bool) -> WindowTotals:
        self.recorded.append((failure, slow))
        return self.inner.record(failure=failure, slow=slow)

    def clear(self) -> None:
        self.inner.clear()


async def test_a_neutral_outcome_keeps_the_consecutive_count(clock) -> None:
    """Two failures, a neutral outcome, one failure: the third failure in a row still opens it."""
    breaker = make(clock)
    await run(breaker, Boom, Boom)
    await run(breaker, Closing)
    assert breaker.fail_counter == 2
    assert breaker.state_name == "closed"
    await run(breaker, Boom)
    assert breaker.state_name == "open"


async def test_a_non_failure_still_resets_the_count(clock) -> None:
    """Without is_neutral, an error that is not a failure is a success: the count starts over."""
    breaker = make(clock)
    await run(breaker, Boom, Boom, CallerFault)
    assert breaker.fail_counter == 0
    await run(breaker, Boom, Boom)
    assert breaker.state_name == "closed"


async def test_nothing_is_neutral_by_default(clock) -> None:
    """The default predicate makes nothing neutral: an excluded error resets the count as before."""
    breaker = CircuitBreakerPolicy(3, 10.0, clock=clock, is_failure=lambda e: isinstance(e, Boom))
    await run(breaker, Boom, Boom, Closing)
    assert breaker.fail_counter == 0


async def test_a_neutral_trial_leaves_it_half_open_and_frees_the_slot(clock) -> None:
    """A neutral trial neither closes nor reopens a half-open breaker; the next trial is admitted."""
    breaker = make(clock, half_open_max_calls=1)
    await run(breaker, Boom, Boom, Boom)
    clock.advance(10)
    seen: list[tuple[str, str]] = []
    breaker.add_state_listener(lambda b, old, new: seen.append((old, new)))
    await run(breaker, Closing)
    assert breaker.state_name == "half_open"
    assert seen == [("open", "half_open")]
    assert await breaker.call_through(ok) == "ok"
    assert breaker.state_name == "closed"


async def test_a_neutral_trial_in_flight_still_holds_its_slot(clock) -> None:
    """Until it ends, a trial that will turn out neutral keeps the only slot; then it frees it."""
    breaker = make(clock, half_open_max_calls=1)
    await run(breaker, Boom, Boom, Boom)
    clock.advance(10)
    gate = asyncio.Event()

    async def closing_later() -> None:
        await gate.wait()
        raise Closing

    trial = asyncio.create_task(breaker.call_through(closing_later))
    await asyncio.sleep(0)
    with pytest.raises(BreakerRejectedError):
        await breaker.call_through(ok)
    gate.set()
    with pytest.raises(Closing):
        await trial
    assert breaker.state_name == "half_open"
    assert await breaker.call_through(ok) == "ok"


async def test_a_caller_fault_closes_a_half_open_breaker(clock) -> None:
    """Unlike a neutral outcome, a non-failure trial is a success: the upstream answered."""
    breaker = make(clock)
    await run(breaker, Boom, Boom, Boom)
    clock.advance(10)
    await run(breaker, CallerFault)
    assert breaker.state_name == "closed"


async def test_neutral_outcomes_stay_out_of_the_failure_rate_window(clock) -> None:
    """The window records failures and successes only: neutral calls change no total."""
    window = SpyWindow(100)
    breaker = make(clock, window=window, minimum_calls=10, failure_rate=0.5)
    await run(breaker, Boom, Closing, CallerFault, Closing)
    assert await breaker.call_through(ok) == "ok"
    assert window.recorded == [(True, False), (False, False), (False, False)]


async def test_neutral_outcomes_do_not_dilute_the_failure_rate(clock) -> None:
    """Nine failures and any number of neutral calls: the tenth call decides, at 90%."""
    breaker = make(clock, window=CountWindow(100), minimum_calls=10, failure_rate=0.5)
    await run(breaker, *[Boom] * 9)
    await run(breaker, *[Closing] * 20)
    assert breaker.state_name == "closed"
    await breaker.call_through(ok)
    assert breaker.state_name == "open"


async def test_a_cancelled_call_is_neutral_in_both_modes(clock) -> None:
    """Cancellation was neutral before is_neutral existed, and still is: no count, no window entry."""
    window = SpyWindow(100)
    for breaker in (make(clock), make(clock, window=window, minimum_calls=10)):
        await run(breaker, Boom, Boom)
        task = asyncio.create_task(breaker.call_through(asyncio.sleep, 10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert breaker.fail_counter == 2
    assert window.recorded == [(True, False), (True, False)]
