"""The closed fast path hands outcomes to the breaker exactly as aiobreaker's wrapper does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.clients.testing import FakeClock
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.window import CountWindow


class Boom(Exception):
    """A failure the breaker counts."""


class Closing(Exception):
    """Neutral: our own shutdown."""


class CallerFault(Exception):
    """Not a failure: a success for the breaker (the upstream answered)."""


def make(clock: FakeClock, **kw: Any) -> CircuitBreakerPolicy:
    return CircuitBreakerPolicy(
        failure_threshold=3,
        reset_timeout_seconds=10.0,
        clock=clock,
        is_failure=lambda e: isinstance(e, Boom),
        is_neutral=lambda e: isinstance(e, Closing),
        **kw,
    )


async def through_wrapper(breaker: CircuitBreakerPolicy, call: Callable[[], Awaitable[str]]) -> str:
    return await breaker.call_through(call)


async def through_fast_path(breaker: CircuitBreakerPolicy, call: Callable[[], Awaitable[str]]) -> str:
    """As the pipeline runs an attempt when ``fast_state()`` offers a state."""
    state = breaker.fast_state()
    if state is None:
        return await breaker.call_through(call)
    try:
        result = await call()
    except Exception as exc:
        state.failed(exc)
        raise
    state.succeeded()
    return result


def outcome(kind: str) -> Callable[[], Awaitable[str]]:
    async def call() -> str:
        if kind == "ok":
            return "ok"
        raise {"boom": Boom, "closing": Closing, "fault": CallerFault}[kind]()

    return call


SEQUENCE = ["boom", "boom", "closing", "fault", "boom", "boom", "ok", "boom", "boom", "closing", "boom"]


@pytest.mark.parametrize("run", [through_wrapper, through_fast_path], ids=["wrapper", "fast-path"])
async def test_same_counts_and_states_either_way(run: Any) -> None:
    clock = FakeClock()
    breaker = make(clock)
    seen = []
    for kind in SEQUENCE:
        try:
            await run(breaker, outcome(kind))
        except Exception as exc:  # the outcome is what is compared
            seen.append((kind, type(exc).__name__, breaker.fail_counter, breaker.state_name))
        else:
            seen.append((kind, "ok", breaker.fail_counter, breaker.state_name))
    # Written out once: both ways must match it (a neutral error leaves the count, a
    # caller's fault clears it like a success, the third failure in a row opens).
    assert seen == [
        ("boom", "Boom", 1, "closed"),
        ("boom", "Boom", 2, "closed"),
        ("closing", "Closing", 2, "closed"),
        ("fault", "CallerFault", 0, "closed"),
        ("boom", "Boom", 1, "closed"),
        ("boom", "Boom", 2, "closed"),
        ("ok", "ok", 0, "closed"),
        ("boom", "Boom", 1, "closed"),
        ("boom", "Boom", 2, "closed"),
        ("closing", "Closing", 2, "closed"),
        ("boom", "Boom", 3, "open"),
    ]


async def test_fast_state_only_while_closed_and_untimed() -> None:
    clock = FakeClock()
    breaker = make(clock)
    assert breaker.fast_state() is not None
    breaker.open()
    assert breaker.fast_state() is None  # open: the wrapper refuses
    clock.advance(10.0)
    breaker.half_open()
    assert breaker.state_name == "half_open"
    assert breaker.fast_state() is None  # half-open: the wrapper counts its trials
    assert await breaker.call_through(outcome("ok")) == "ok"
    assert breaker.state_name == "closed"
    assert breaker.fast_state() is not None
    rate = make(clock, window=CountWindow(10))
    assert rate.fast_state() is None  # a failure-rate window times every call: the general path


async def test_a_late_failure_from_before_the_opening_does_not_reopen() -> None:
    """A call that began while closed and fails after the breaker opened leaves the opening alone."""
    clock = FakeClock()
    breaker = make(clock)
    state = breaker.fast_state()
    assert state is not None
    breaker.open()
    opened_at = breaker.seconds_until_half_open()
    clock.advance(5.0)
    state.failed(Boom())  # the closed state's outcome, after the breaker moved on
    assert breaker.state_name == "open"
    assert breaker.seconds_until_half_open() == pytest.approx(opened_at - 5.0)
