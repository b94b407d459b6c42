"""Fallbacks, the rate limiter, deadline propagation and the adaptive limit, against real servers."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from app.clients import (
    AnalysisEngineClient,
    ClientTimeoutError,
    ClientValidationError,
    RateLimitedError,
    ResourceNotFoundError,
    ServerError,
)
from app.clients.fallback import collect_degraded
from app.observability.context import inbound_deadline_var
from tests.support import rawtcp
from tests.support.transports import connections_in_use
from tests.support.upstream import Upstream, delayed, json

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


async def test_fallback_value_and_callable(make_client, upstream: Upstream) -> None:
    """An unavailable call answers with the fallback value, or the callable's result on the error."""
    upstream.route("r", json({}, status=503))
    client = make_client(upstream.base_url, max_retries=0)
    with collect_degraded() as degraded:
        assert await client.get("r", fallback={"cached": True}) == {"cached": True}
        assert (
            await client.get("r", fallback=lambda err: f"{type(err).__name__}:{err.status}")
            == "ServerError:503"
        )
    assert degraded == ["test-upstream"]
    assert client.observer.stats.snapshot()["counts"]["fallback"] == 2


async def test_timeouts_fall_back_too(make_client) -> None:
    """A timed-out call falls back."""
    async with rawtcp.raw_server(rawtcp.hang) as url:
        client = make_client(url, max_retries=0, timeout_seconds=0.05)
        assert await client.get("slow", fallback=None) is None


@pytest.mark.parametrize(("status", "cls"), [(422, ClientValidationError), (404, ResourceNotFoundError)])
async def test_caller_errors_never_fall_back(make_client, upstream: Upstream, status, cls) -> None:
    """Validation and not-found errors are the caller's: no fallback, nothing marked degraded."""
    upstream.route("r", json({"detail": "bad"}, status=status))
    client = make_client(upstream.base_url)
    with collect_degraded() as degraded, pytest.raises(cls):
        await client.get("r", fallback="never")
    assert degraded == []


async def test_service_methods_take_a_fallback(make_client, upstream: Upstream) -> None:
    """``fallback=`` on a service method works like on the verbs."""
    upstream.route("*", json({}, status=502))
    client = make_client(upstream.base_url, cls=AnalysisEngineClient, max_retries=0)
    assert await client.detect_market_regime("EURUSD", fallback={"regime": "unknown"}) == {
        "regime": "unknown"
    }


async def test_rate_limit_fail_mode(make_client, upstream: Upstream) -> None:
    """Fail mode: over the burst, RateLimitedError at once with retry_after, nothing sent."""
    upstream.route("r", json({}))
    client = make_client(
        upstream.base_url, rate_limit_per_second=5, rate_limit_burst=2, rate_limit_mode="fail"
    )
    await client.get("r")
    await client.get("r")
    with pytest.raises(RateLimitedError) as info:
        await client.get("r")
    assert info.value.status is None
    assert 0 < info.value.retry_after <= 0.2
    assert upstream.hits["r"] == 2
    assert client.breaker.state_name == "closed"  # our own limit says nothing about the upstream


async def test_rate_limit_wait_mode_spaces_calls(make_client, upstream: Upstream) -> None:
    """Wait mode: six calls at 20/s with a burst of 2 take about (6 - 2) / 20 s."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url, rate_limit_per_second=20, rate_limit_burst=2)
    started = time.monotonic()
    await asyncio.gather(*(client.get("r") for _ in range(6)))
    assert 0.18 <= time.monotonic() - started < 0.5


async def test_rate_limit_wait_never_outlives_the_deadline(make_client, upstream: Upstream) -> None:
    """A wait longer than the deadline is refused at once."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url, rate_limit_per_second=1, rate_limit_burst=1)
    await client.get("r")
    started = time.monotonic()
    with pytest.raises(RateLimitedError):
        await client.get("r", timeout=0.2)
    assert time.monotonic() - started < 0.05


async def test_outbound_calls_forward_their_remaining_budget(make_client, upstream: Upstream) -> None:
    """Each attempt sends X-Request-Timeout-Ms: its time left, in whole milliseconds."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url, timeout_seconds=5.0)
    await client.get("r", timeout=0.8)
    await client.get("r")  # no deadline: nothing to forward
    first, second = upstream.requests
    assert 700 <= int(first.headers["X-Request-Timeout-Ms"]) <= 800
    assert "X-Request-Timeout-Ms" not in second.headers


async def test_inbound_deadline_caps_outbound_calls(make_client, upstream: Upstream) -> None:
    """Inside a request with 150 ms left, a call with its own 5 s deadline gets at most 150 ms."""
    upstream.route("slow", delayed(1.0, json({})))
    client = make_client(upstream.base_url, timeout_seconds=5.0, max_retries=3)
    token = inbound_deadline_var.set(time.monotonic() + 0.15)
    try:
        started = time.monotonic()
        with pytest.raises(ClientTimeoutError):
            await client.get("slow", timeout=5.0)
        assert time.monotonic() - started <= 0.2
    finally:
        inbound_deadline_var.reset(token)
    assert int(upstream.requests[0].headers["X-Request-Timeout-Ms"]) <= 150
    assert upstream.hits["slow"] == 1  # a retry could not have finished in time


async def test_spent_inbound_deadline_sends_nothing(make_client, upstream: Upstream) -> None:
    """When the caller's deadline is already spent, no request goes out."""
    client = make_client(upstream.base_url)
    token = inbound_deadline_var.set(time.monotonic() - 1)
    try:
        with pytest.raises(ClientTimeoutError, match="deadline"):
            await client.get("r")
    finally:
        inbound_deadline_var.reset(token)
    assert upstream.hits.total() == 0


async def test_adaptive_limit_follows_upstream_latency(make_client, upstream: Upstream) -> None:
    """The limit falls when latency rises under load and rises again when it recovers."""
    latency = 0.002

    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(latency)
        return web.json_response({})

    upstream.route("r", handler)
    client = make_client(
        upstream.base_url, bulkhead_mode="adaptive", bulkhead_max_concurrent=100, bulkhead_max_waiting=1000,
        adaptive_initial_limit=40, adaptive_min_limit=4,
    )  # fmt: skip

    async def load(calls: int) -> list[int]:
        """Run ``calls`` calls from 60 workers; the limit seen after each call."""
        queue = asyncio.Queue()
        for _ in range(calls):
            queue.put_nowait(None)
        limits: list[int] = []

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await client.get("r")
                limits.append(client.bulkhead.max_concurrent)

        await asyncio.gather(*(worker() for _ in range(60)))
        return limits

    steady = (await load(600))[-1]
    latency = 0.04
    # Gradient2 cuts the limit as soon as latency jumps; its long-term baseline then
    # adapts, so the low point is the measure, not the end of the phase.
    congested = min(await load(300))
    latency = 0.002
    recovered = (await load(1500))[-1]
    assert congested < steady * 0.75
    assert recovered > congested
    assert client.observer.stats.snapshot()["counts"]["success"] == 2400


async def test_hedged_loser_is_cancelled_and_its_connection_released(make_client, upstream: Upstream) -> None:
    """The first answer wins; the slow attempt is cancelled and its connection not kept."""
    calls = 0

    async def first_slow(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(2.0 if calls == 1 else 0.001)
        return web.json_response({"call": calls})

    upstream.route("r", first_slow)
    client = make_client(upstream.base_url, hedging_enabled=True, hedging_delay_seconds=0.05)
    started = time.monotonic()
    assert await client.get("r") == {"call": 2}
    assert time.monotonic() - started < 0.5
    assert connections_in_use(client._transport) == 0


async def test_hedging_is_for_idempotent_calls_only(make_client, upstream: Upstream) -> None:
    """A plain POST is never hedged."""
    upstream.route("r", delayed(0.2, json({})))
    client = make_client(upstream.base_url, hedging_enabled=True, hedging_delay_seconds=0.02)
    await client.post("r", json={})
    assert upstream.hits["r"] == 1


async def test_a_hedging_clients_posts_teach_the_hedge_delay(make_client, upstream: Upstream) -> None:
    """Not hedged, but timed: the hedge delay (a percentile of round trips) learns from every call."""
    upstream.route("r", json({}))
    client = make_client(upstream.base_url, hedging_enabled=True, hedging_percentile=90)
    tracker = client._pipeline.hedging.tracker
    for _ in range(tracker.min_samples):
        await client.post("r", json={})
    assert tracker.percentile(90) is not None


async def test_server_errors_still_open_a_failure_rate_breaker(make_client, upstream: Upstream) -> None:
    """Failure-rate mode through the client: 20 calls at 50% errors open it."""
    upstream.route("r", json({}, status=500))
    upstream.route("ok", json({}))
    client = make_client(
        upstream.base_url,
        max_retries=0,
        circuit_breaker_mode="failure_rate",
        circuit_breaker_minimum_calls=20,
    )
    for i in range(20):
        if i % 2:
            with pytest.raises(ServerError):
                await client.get("r")
        else:
            await client.get("ok")
    assert client.breaker.state_name == "open"
