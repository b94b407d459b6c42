"""The breaker and the bulkhead through a real client, under 100 concurrent callers."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.clients import BulkheadFullError, CircuitBreakerOpenError, ServerError
from tests.support.upstream import Upstream, delayed, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


@pytest.mark.parametrize("max_calls", [1, 4])
async def test_half_open_sends_exactly_n_of_100(make_client, upstream: Upstream, clock, max_calls) -> None:
    """After the reset timeout, 100 concurrent calls reach the upstream exactly N times."""
    upstream.route("r", json({}, status=500))
    client = make_client(
        upstream.base_url,
        clock=clock,
        max_retries=0,
        circuit_breaker_failure_threshold=3,
        circuit_breaker_reset_timeout_seconds=5,
        circuit_breaker_half_open_max_calls=max_calls,
    )
    for _ in range(3):
        with pytest.raises(ServerError):
            await client.get("r")
    upstream.hits.clear()

    started = time.monotonic()
    fast = await asyncio.gather(*(client.get("r") for _ in range(100)), return_exceptions=True)
    assert time.monotonic() - started < 0.5  # open: 100 rejections without a byte sent
    assert all(isinstance(r, CircuitBreakerOpenError) for r in fast)
    assert upstream.hits.total() == 0

    clock.advance(5)
    upstream.route("r", delayed(0.05, json({"ok": True})))
    results = await asyncio.gather(*(client.get("r") for _ in range(100)), return_exceptions=True)
    assert upstream.hits["r"] == max_calls
    assert sum(r == {"ok": True} for r in results) == max_calls
    assert sum(isinstance(r, CircuitBreakerOpenError) for r in results) == 100 - max_calls
    assert client.breaker.state_name == "closed"
    assert await client.get("r") == {"ok": True}


async def test_bulkhead_limits_in_flight_and_waiting(make_client, upstream: Upstream) -> None:
    """At most max_concurrent reach the upstream at once; max_waiting wait; the rest fail at once."""
    upstream.route("slow", delayed(0.1, json({"ok": True})))
    client = make_client(upstream.base_url, bulkhead_max_concurrent=5, bulkhead_max_waiting=10)
    results = await asyncio.gather(*(client.get("slow") for _ in range(40)), return_exceptions=True)
    assert upstream.max_in_flight == 5
    assert sum(r == {"ok": True} for r in results) == 15
    assert sum(isinstance(r, BulkheadFullError) for r in results) == 25
    assert upstream.hits["slow"] == 15
    assert (client.bulkhead.in_flight, client.bulkhead.queued) == (0, 0)
