"""A call cancelled (or timed out) while it waits gives back what it reserved, through the pipeline."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Callable

import pytest

from app.errors import (
    BulkheadFullError,
    CircuitBreakerOpenError,
    ClientTimeoutError,
    ServerError,
)
from app.resilience.adaptive import Gradient2Limit
from app.resilience.breaker import CircuitBreakerPolicy
from app.resilience.budget import RetryBudget
from app.resilience.bulkhead import Bulkhead
from app.resilience.deadline import Deadline
from app.resilience.hedging import HedgingPolicy
from app.resilience.pipeline import CallRecord, Pipeline
from app.resilience.ratelimit import RateLimiter
from app.resilience.retry import RetryPolicy
from tests.support.manual_clock import ManualClock, settle


def _pipeline(clock: ManualClock, **overrides: object) -> Pipeline:
    options: dict[str, object] = {
        "bulkhead": Bulkhead(max_concurrent=10, max_waiting=200),
        "breaker": CircuitBreakerPolicy(failure_threshold=1000, clock=clock),
        "retry": RetryPolicy(max_retries=3, base_delay=1.0, max_delay=8.0, jitter=False),
        "attempt_timeout": 30.0,
        "clock": clock,
    }
    options.update(overrides)
    return Pipeline(**options)  # type: ignore[arg-type]


def _call(
    pipeline: Pipeline, attempt: Callable[[float], object], timeout: float | None = None
) -> asyncio.Task[object]:
    record = CallRecord("svc", "GET", "r", "id")
    deadline = Deadline.after(pipeline.clock, timeout)
    return asyncio.ensure_future(pipeline.execute(attempt, record, deadline, idempotent=True))  # type: ignore[arg-type]


async def _ok(timeout: float) -> str:
    return "ok"


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seed", range(4))
async def test_many_waiters_cancelled_in_the_rate_limiter_leave_no_trace(seed) -> None:
    """100 callers cancelled at random points of their rate-limit wait: a new call is admitted as on a fresh limiter."""
    rng = random.Random(seed)
    clock = ManualClock()
    limiter = RateLimiter(rate=10, burst=2, mode="wait", clock=clock)
    reference = RateLimiter(rate=10, burst=2, mode="wait", clock=clock)
    pipeline = _pipeline(clock, rate_limiter=limiter)
    sent: list[float] = []

    async def attempt(timeout: float) -> str:
        sent.append(clock.now())
        return "ok"

    for _ in range(2):  # the burst: admitted at once, on both limiters
        assert await _call(pipeline, attempt) == "ok"
        reference.reserve(math.inf)
    waiters = [_call(pipeline, attempt) for _ in range(100)]
    await settle()
    assert clock.sleeping == 100
    # Each is cancelled at a random moment before its slot comes (waiter i's slot is at i/10 s).
    plan = sorted((rng.uniform(0, (i + 1) / 10), i) for i in range(100))
    for when, i in plan:
        await clock.advance(max(0.0, 1000.0 + when - clock.now()))
        await _cancel(waiters[i])
    assert len(sent) == 2
    assert (pipeline.bulkhead.in_flight, pipeline.bulkhead.queued, clock.sleeping) == (0, 0, 0)
    assert limiter.reserve(math.inf) == reference.reserve(math.inf)
    await clock.advance(1.0)
    assert await _call(pipeline, attempt) == "ok"
    assert sent[-1] == clock.now()  # admitted without a wait, as on the reference


@pytest.mark.parametrize("seed", range(6))
async def test_survivors_keep_their_slots_and_newcomers_reuse_cancelled_ones(seed) -> None:
    """Half the waiters cancelled: survivors keep their slots and 1/rate spacing; a newcomer takes a freed slot."""
    rng = random.Random(seed)
    clock = ManualClock()
    interval = 0.1
    limiter = RateLimiter(rate=1 / interval, burst=1, mode="wait", clock=clock)
    pipeline = _pipeline(clock, rate_limiter=limiter, bulkhead=Bulkhead(100, 200))
    sent: dict[int, float] = {}

    def attempt_of(n: int) -> Callable[[float], object]:
        async def attempt(timeout: float) -> str:
            sent[n] = clock.now()
            return "ok"

        return attempt

    waiters = [_call(pipeline, attempt_of(i)) for i in range(60)]  # waiter i's slot: i * interval
    await settle()
    doomed = sorted(rng.sample(range(1, 60), 30))
    for i in doomed:
        # Cancelled at a random moment before its slot; survivors whose slot passes go out.
        await clock.advance(rng.uniform(0, 0.9) * (1000.0 + i * interval - clock.now()))
        await _cancel(waiters[i])
    arrival = clock.now()
    newcomer = _call(pipeline, attempt_of(60))
    await settle()
    await clock.advance(7.0)
    assert await newcomer == "ok"
    survivors = [i for i in range(60) if i not in doomed]
    assert sorted(sent) == [*survivors, 60]
    for i in survivors:
        assert sent[i] == pytest.approx(1000.0 + i * interval)  # nobody was pushed later
    times = sorted(sent.values())
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(times))
    # The newcomer takes the earliest slot still ahead that no survivor holds; past the
    # last survivor's slot the schedule has rolled back, so it goes at once if that is past.
    after_last = 1000.0 + (max(survivors) + 1) * interval
    free_ahead = [
        1000.0 + k * interval for k in range(1, 61) if k not in survivors and 1000.0 + k * interval >= arrival
    ]
    expected = arrival if after_last <= arrival else min(free_ahead)
    assert sent[60] == pytest.approx(expected)


@pytest.mark.parametrize("how", ["cancelled", "deadline", "bulkhead_full"])
async def test_a_call_that_never_runs_gives_its_rate_slot_back(how) -> None:
    """Past the limiter but stopped at the bulkhead (cancelled, deadline, full): its rate slot is free again."""
    clock = ManualClock()
    limiter = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    reference = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=0 if how == "bulkhead_full" else 5)
    pipeline = _pipeline(clock, rate_limiter=limiter, bulkhead=bulkhead)
    release = asyncio.Event()

    async def hold(timeout: float) -> str:
        await release.wait()
        return "ok"

    holder = _call(pipeline, hold)
    await settle()
    reference.reserve(math.inf)
    second = _call(pipeline, _ok, timeout=0.15 if how == "deadline" else None)
    await settle()
    await clock.advance(0.1)  # its rate-limit wait is over; now it meets the full bulkhead
    if how == "cancelled":
        assert bulkhead.queued == 1
        await _cancel(second)
    elif how == "deadline":
        with pytest.raises(ClientTimeoutError):
            await second  # the bulkhead wait is bounded by the 0.05 s left
    else:
        with pytest.raises(BulkheadFullError):
            await second
    assert limiter.reserve(math.inf) == reference.reserve(math.inf)
    release.set()
    assert await holder == "ok"
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_a_call_refused_by_an_open_breaker_gives_its_rate_slot_back() -> None:
    """Nothing sent because the breaker is open: the rate slot is not spent either."""
    clock = ManualClock()
    limiter = RateLimiter(rate=1, burst=1, mode="fail", clock=clock)
    breaker = CircuitBreakerPolicy(failure_threshold=1, reset_timeout_seconds=60, clock=clock)
    pipeline = _pipeline(clock, rate_limiter=limiter, breaker=breaker)
    breaker.open()
    with pytest.raises(CircuitBreakerOpenError):
        await _call(pipeline, _ok)
    breaker.reset()
    assert await _call(pipeline, _ok) == "ok"  # within the same second: the slot was given back


@pytest.mark.parametrize("retries_before", [0, 1, 2])
async def test_cancelled_in_a_retry_sleep_releases_the_slot_and_refunds_the_retry(retries_before) -> None:
    """Cancelled while sleeping before a retry: bulkhead slot freed, that retry not charged to the budget."""
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, window_seconds=10, min_per_second=1, clock=clock)
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    pipeline = _pipeline(clock, bulkhead=bulkhead, budget=budget)
    attempts = 0

    async def failing(timeout: float) -> str:
        nonlocal attempts
        attempts += 1
        raise ServerError("unavailable", status=503)

    before = budget.balance
    call = _call(pipeline, failing)
    await settle()
    for n in range(retries_before):
        await clock.advance(2.0**n)  # sleeps of 1, 2, 4 s (no jitter)
    assert attempts == retries_before + 1
    assert clock.sleeping == 1
    assert bulkhead.in_flight == 1
    await _cancel(call)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    assert budget.balance == before - retries_before  # the retries that ran, and no more
    assert budget.exhausted == 0


async def test_cancelled_during_the_hedge_delay_spends_nothing() -> None:
    """Cancelled while the first attempt runs and the hedge waits: slot freed, no hedge charged, attempt ended."""
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, window_seconds=10, min_per_second=1, clock=clock)
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    pipeline = _pipeline(
        clock, bulkhead=bulkhead, budget=budget, hedging=HedgingPolicy(delay_seconds=30, max_attempts=2)
    )
    started, ended = asyncio.Event(), asyncio.Event()

    async def hang(timeout: float) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        return "never"

    before = budget.balance
    call = _call(pipeline, hang)
    await started.wait()
    await _cancel(call)
    assert ended.is_set()  # the running attempt was cancelled and awaited, not left behind
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    assert budget.balance == before


async def test_cancelled_after_the_hedge_started_ends_both_attempts() -> None:
    """Cancelled with a hedge in flight: both attempts end, the slot is freed, the one hedge sent stays charged."""
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, window_seconds=10, min_per_second=1, clock=clock)
    bulkhead = Bulkhead(max_concurrent=1, max_waiting=5)
    pipeline = _pipeline(
        clock, bulkhead=bulkhead, budget=budget, hedging=HedgingPolicy(delay_seconds=0.001, max_attempts=2)
    )
    running = 0
    both = asyncio.Event()

    async def hang(timeout: float) -> str:
        nonlocal running
        running += 1
        if running == 2:
            both.set()
        try:
            await asyncio.Event().wait()
        finally:
            running -= 1
        return "never"

    before = budget.balance
    call = _call(pipeline, hang)
    await asyncio.wait_for(both.wait(), 5)
    await _cancel(call)
    assert running == 0
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    assert budget.balance == before - 1


@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_bulkhead_waiters_through_the_pipeline(seed) -> None:
    """Waiters cancelled at random while holders finish: in flight and queued end at 0, full capacity is back."""
    rng = random.Random(seed)
    clock = ManualClock()
    bulkhead = Bulkhead(max_concurrent=3, max_waiting=100)
    pipeline = _pipeline(clock, bulkhead=bulkhead)
    gates: list[asyncio.Event] = []

    async def gated(timeout: float) -> str:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return "ok"

    calls = [_call(pipeline, gated) for _ in range(80)]
    await settle()
    assert (bulkhead.in_flight, bulkhead.queued) == (3, 77)
    while not all(c.done() for c in calls):
        pending = [c for c in calls if not c.done()]
        if rng.random() < 0.6:
            pending[rng.randrange(len(pending))].cancel()
        else:
            open_gates = [g for g in gates if not g.is_set()]
            if open_gates:
                rng.choice(open_gates).set()
        await settle(3)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    for _ in range(3):
        assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


@pytest.mark.parametrize("seed", range(3))
async def test_adaptive_limit_with_cancelled_waiters(seed) -> None:
    """Adaptive mode: the limit moves while waiters are cancelled; nothing is left in flight or queued."""
    rng = random.Random(seed)
    clock = ManualClock()
    bulkhead = Bulkhead(max_concurrent=50, max_waiting=200)
    adaptive = Gradient2Limit(initial_limit=4, min_limit=1, max_limit=50)
    pipeline = _pipeline(clock, bulkhead=bulkhead, adaptive=adaptive)
    gates: list[asyncio.Event] = []

    async def gated(timeout: float) -> str:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        await clock.sleep(0)  # round trip measured on the manual clock
        return "ok"

    calls = [_call(pipeline, gated) for _ in range(60)]
    await settle()
    assert bulkhead.in_flight == 4
    while not all(c.done() for c in calls):
        pending = [c for c in calls if not c.done()]
        choice = rng.random()
        if choice < 0.4:
            pending[rng.randrange(len(pending))].cancel()
        elif choice < 0.6:
            bulkhead.set_limit(rng.randint(1, 8))  # the limit moving under the waiters
        else:
            open_gates = [g for g in gates if not g.is_set()]
            if open_gates:
                clock.t += rng.uniform(0.001, 0.2)
                rng.choice(open_gates).set()
        await settle(3)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
