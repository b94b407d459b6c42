"""Callers cancelled while a real client waits (rate limit, bulkhead, backoff, hedge) leave nothing reserved."""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from aiohttp import web

from app.clients import ClientTimeoutError
from app.resilience.ratelimit import RateLimiter
from tests.support.manual_clock import ManualClock, settle
from tests.support.upstream import Handler, Upstream, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _gated(gate: asyncio.Event, arrivals: asyncio.Queue[None] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if arrivals is not None:
            arrivals.put_nowait(None)
        await gate.wait()
        return web.json_response({"ok": True})

    return handler


@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_rate_limit_waiters_leave_the_limiter_as_new(
    make_client, upstream: Upstream, seed
) -> None:
    """50 callers cancelled at random points of their rate-limit wait: the next call goes out at once, as on a fresh limiter."""
    rng = random.Random(seed)
    upstream.route("r", json({"ok": True}))
    clock = ManualClock()
    client = make_client(
        upstream.base_url, clock=clock, rate_limit_per_second=10, rate_limit_burst=2, rate_limit_mode="wait"
    )
    await client.get("r")
    await client.get("r")
    callers = [asyncio.ensure_future(client.get("r")) for _ in range(50)]
    await settle()
    assert clock.sleeping == 50
    plan = sorted((rng.uniform(0, (i + 1) / 10), i) for i in range(50))  # caller i's slot: (i+1)/10 s
    for when, i in plan:
        await clock.advance(max(0.0, 1000.0 + when - clock.now()))
        await _cancel(callers[i])
    assert upstream.hits["r"] == 2
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    # A fresh limiter that saw the two calls would let this one through without a wait.
    assert await asyncio.wait_for(client.get("r"), 5) == {"ok": True}
    assert upstream.hits["r"] == 3


@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_all_at_once_the_next_call_waits_as_on_a_fresh_limiter(
    make_client, upstream: Upstream, seed
) -> None:
    """Waiters cancelled in one instant, in any order: the next call waits exactly what a fresh limiter would ask."""
    upstream.route("r", json({"ok": True}))
    clock = ManualClock()
    client = make_client(
        upstream.base_url, clock=clock, rate_limit_per_second=10, rate_limit_burst=1, rate_limit_mode="wait"
    )
    reference = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    await client.get("r")
    reference.reserve(math.inf)
    callers = [asyncio.ensure_future(client.get("r")) for _ in range(30)]
    await settle()
    await clock.advance(0.05)
    random.Random(seed).shuffle(callers)
    for caller in callers:
        await _cancel(caller)
    assert client.rate_limiter.reserve(math.inf) == reference.reserve(math.inf) == pytest.approx(0.05)
    next_call = asyncio.ensure_future(client.get("r"))  # books the slot after that, 0.15 s away
    await settle()
    await clock.advance(0.14)
    assert not next_call.done()
    await clock.advance(0.02)
    assert await asyncio.wait_for(next_call, 5) == {"ok": True}
    assert upstream.hits["r"] == 2


@pytest.mark.parametrize("seed", range(3))
async def test_cancelled_bulkhead_waiters_and_holders_leave_no_slot_taken(
    make_client, upstream: Upstream, seed
) -> None:
    """Queued and in-flight callers cancelled at random while others finish: in flight and queued end at 0."""
    rng = random.Random(seed)
    gate = asyncio.Event()
    upstream.route("slow", _gated(gate))
    upstream.route("fast", json({"ok": True}))
    client = make_client(upstream.base_url, bulkhead_max_concurrent=3, bulkhead_max_waiting=40)
    try:
        callers = [asyncio.ensure_future(client.get("slow")) for _ in range(30)]
        await settle()
        assert (client.bulkhead.in_flight, client.bulkhead.queued) == (3, 27)
        for caller in rng.sample(callers, 20):
            caller.cancel()
            await asyncio.sleep(rng.uniform(0, 0.005))
        gate.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
    finally:
        gate.set()
    finished = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, asyncio.CancelledError) for r in results if isinstance(r, BaseException))
    assert len(finished) == 10
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert await asyncio.gather(*(client.get("fast") for _ in range(3))) == [{"ok": True}] * 3


@pytest.mark.parametrize("retries_before", [0, 1])
async def test_cancelled_in_backoff_frees_the_slot_and_refunds_the_retry(
    make_client, upstream: Upstream, retries_before
) -> None:
    """Cancelled during a retry's backoff sleep: bulkhead slot freed, that retry not charged, nothing more sent."""
    upstream.route("r", json({"detail": "down"}, status=503))
    clock = ManualClock()
    client = make_client(
        upstream.base_url,
        clock=clock,
        max_retries=3,
        retry_base_delay=5.0,
        retry_max_delay=5.0,
        retry_budget_enabled=True,
        retry_budget_ratio=0.0,
        retry_budget_min_retries_per_second=1.0,
        bulkhead_max_concurrent=1,
    )
    before = client.budget.balance
    call = asyncio.ensure_future(client.get("r"))
    for _ in range(retries_before + 1):
        # The attempt is on the wire; its backoff sleep starts when it fails.
        await asyncio.wait_for(clock.until_sleeping(), 5)
        if upstream.hits["r"] <= retries_before:
            await clock.advance(5.0)
    assert upstream.hits["r"] == retries_before + 1
    assert client.bulkhead.in_flight == 1
    await _cancel(call)
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert client.budget.balance == before - retries_before
    await clock.advance(60.0)
    assert upstream.hits["r"] == retries_before + 1


async def test_deadline_expiring_in_the_bulkhead_queue_gives_the_rate_slot_back(
    make_client, upstream: Upstream
) -> None:
    """A call whose deadline runs out waiting for a slot gets ClientTimeoutError and frees its rate slot."""
    gate = asyncio.Event()
    upstream.route("slow", _gated(gate))
    upstream.route("fast", json({"ok": True}))
    clock = ManualClock()
    client = make_client(
        upstream.base_url,
        clock=clock,
        rate_limit_per_second=10,
        rate_limit_burst=1,
        bulkhead_max_concurrent=1,
    )
    reference = RateLimiter(rate=10, burst=1, mode="wait", clock=clock)
    try:
        holder = asyncio.ensure_future(client.get("slow"))
        reference.reserve(math.inf)
        await settle()
        late = asyncio.ensure_future(client.get("fast", timeout=0.15))
        await settle()
        await clock.advance(0.1)  # past the limiter; 0.05 s of its deadline left for the queue
        with pytest.raises(ClientTimeoutError, match="bulkhead"):
            await late
        assert client.rate_limiter.reserve(math.inf) == reference.reserve(math.inf)
    finally:
        gate.set()
    assert await holder == {"ok": True}
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert upstream.hits["fast"] == 0


async def test_cancelled_during_the_hedge_delay_spends_nothing(make_client, upstream: Upstream) -> None:
    """Cancelled while the first attempt runs and the hedge is not due: one request sent, slot freed, budget untouched."""
    gate, arrivals = asyncio.Event(), asyncio.Queue[None]()
    upstream.route("slow", _gated(gate, arrivals))
    client = make_client(
        upstream.base_url,
        hedging_enabled=True,
        hedging_delay_seconds=30,
        retry_budget_enabled=True,
        retry_budget_ratio=0.0,
        retry_budget_min_retries_per_second=1.0,
    )
    before = client.budget.balance
    try:
        call = asyncio.ensure_future(client.get("slow"))
        await asyncio.wait_for(arrivals.get(), 5)
        await _cancel(call)
    finally:
        gate.set()
    assert upstream.hits["slow"] == 1
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert client.budget.balance == before


async def test_cancelled_with_a_hedge_in_flight_ends_both(make_client, upstream: Upstream) -> None:
    """Cancelled after the hedge went out: both attempts end, the slot is freed, the sent hedge stays charged."""
    gate, arrivals = asyncio.Event(), asyncio.Queue[None]()
    upstream.route("slow", _gated(gate, arrivals))
    client = make_client(
        upstream.base_url,
        hedging_enabled=True,
        hedging_delay_seconds=0.01,
        retry_budget_enabled=True,
        retry_budget_ratio=0.0,
        retry_budget_min_retries_per_second=1.0,
    )
    before = client.budget.balance
    try:
        call = asyncio.ensure_future(client.get("slow"))
        for _ in range(2):  # the first attempt, then its hedge
            await asyncio.wait_for(arrivals.get(), 5)
        await _cancel(call)
    finally:
        gate.set()
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
    assert client.budget.balance == before - 1
