"""Which calls are retried, how often, how long apart, and Retry-After, against a real server."""

from __future__ import annotations

import email.utils
import time

import pytest

from app.clients import (
    ClientConnectionError,
    RateLimitedError,
    RetryExhaustedError,
    ServerError,
)
from tests.support import rawtcp
from tests.support.upstream import Upstream, json, sequence

pytestmark = pytest.mark.both_transports  # conftest: every test on aiohttp and on lean, same expectations


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_idempotent_methods_are_retried(make_client, upstream: Upstream, method) -> None:
    """GET, PUT and DELETE are retried on a retryable status until they succeed."""
    upstream.route("r", sequence(json({}, status=503), json({}, status=502), json({"ok": 1})))
    client = make_client(upstream.base_url, max_retries=3)
    assert await client.request(method, "r") == {"ok": 1}
    assert upstream.hits["r"] == 3


async def test_retry_count_is_max_retries_plus_one(make_client, upstream: Upstream) -> None:
    """A call makes at most ``max_retries + 1`` attempts."""
    upstream.route("r", json({}, status=503))
    client = make_client(upstream.base_url, max_retries=4)
    with pytest.raises(RetryExhaustedError):
        await client.get("r")
    assert upstream.hits["r"] == 5


async def test_post_is_not_retried(make_client, upstream: Upstream) -> None:
    """A plain POST that failed upstream is not retried: it may have had its effect."""
    upstream.route("orders", json({}, status=503))
    client = make_client(upstream.base_url, max_retries=3)
    with pytest.raises(ServerError) as info:
        await client.post("orders", json={"qty": 1})
    assert not isinstance(info.value, RetryExhaustedError)
    assert upstream.hits["orders"] == 1


async def test_post_with_idempotent_flag_is_retried(make_client, upstream: Upstream) -> None:
    """``idempotent=True`` makes a POST retryable."""
    upstream.route("calc", sequence(json({}, status=503), json({"v": 2})))
    client = make_client(upstream.base_url, max_retries=3)
    assert await client.post("calc", json={"x": 1}, idempotent=True) == {"v": 2}
    assert upstream.hits["calc"] == 2


async def test_post_with_idempotency_key_is_retried_and_sends_it(make_client, upstream: Upstream) -> None:
    """An idempotency key makes a POST retryable, and every attempt carries the same key."""
    upstream.route("orders", sequence(json({}, status=502), json({"id": 9})))
    client = make_client(upstream.base_url, max_retries=3)
    assert await client.post("orders", json={"qty": 1}, idempotency_key="order-123") == {"id": 9}
    keys = [r.headers.get("Idempotency-Key") for r in upstream.requests]
    assert keys == ["order-123", "order-123"]
    request_ids = {r.headers["X-Request-ID"] for r in upstream.requests}
    assert len(request_ids) == 1  # one logical call, one request id across attempts


async def test_get_with_idempotent_false_is_not_retried(make_client, upstream: Upstream) -> None:
    """``idempotent=False`` switches retries off even for a GET."""
    upstream.route("r", json({}, status=503))
    client = make_client(upstream.base_url, max_retries=3)
    with pytest.raises(ServerError):
        await client.get("r", idempotent=False)
    assert upstream.hits["r"] == 1


async def test_non_retryable_status_is_not_retried(make_client, upstream: Upstream) -> None:
    """A 500 is not in the default ``retry_on_status``."""
    upstream.route("r", json({}, status=500))
    client = make_client(upstream.base_url, max_retries=3)
    with pytest.raises(ServerError):
        await client.get("r")
    assert upstream.hits["r"] == 1


async def test_connection_refused_post_is_retried(make_client) -> None:
    """A POST refused before it was sent is safe to retry."""
    client = make_client(rawtcp.closed_port_url(), max_retries=2)
    with pytest.raises(ClientConnectionError) as info:
        await client.post("orders", json={"qty": 1})
    assert info.value.attempts == 3


async def test_reset_after_send_post_is_not_retried(make_client) -> None:
    """A POST whose connection broke after it was sent is not retried."""
    async with rawtcp.raw_server(rawtcp.reset) as url:
        client = make_client(url, max_retries=2)
        with pytest.raises(ClientConnectionError) as info:
            await client.post("orders", json={"qty": 1})
    assert info.value.attempts == 1
    assert info.value.request_sent is True


async def test_backoff_waits_grow_exponentially(make_client, upstream: Upstream, clock) -> None:
    """Waits follow ``min(max_delay, base * factor**(n-1))`` (no jitter)."""
    upstream.route("r", json({}, status=503))
    client = make_client(
        upstream.base_url,
        clock=clock,
        max_retries=5,
        retry_base_delay=0.1,
        retry_max_delay=0.5,
        retry_backoff_factor=2.0,
        circuit_breaker_failure_threshold=100,
    )
    with pytest.raises(RetryExhaustedError):
        await client.get("r")
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


async def test_an_open_breaker_cuts_retries_short(make_client, upstream: Upstream, clock) -> None:
    """The attempt that trips the breaker is the last: no sleep, no retry into an open breaker."""
    upstream.route("r", json({}, status=503))
    client = make_client(upstream.base_url, clock=clock, max_retries=10, circuit_breaker_failure_threshold=3)
    with pytest.raises(RetryExhaustedError) as info:
        await client.get("r")
    assert isinstance(info.value, ServerError)  # the tripping attempt's own error
    assert upstream.hits["r"] == 3
    assert len(clock.sleeps) == 2
    assert client.breaker.state_name == "open"


async def test_full_jitter_stays_within_the_backoff(make_client, upstream: Upstream, clock) -> None:
    """With jitter, each wait is drawn from [0, backoff]; they are not all equal."""
    upstream.route("r", json({}, status=503))
    client = make_client(
        upstream.base_url, clock=clock, max_retries=8, retry_base_delay=1.0,
        retry_max_delay=1.0, retry_jitter=True, circuit_breaker_failure_threshold=100,
    )  # fmt: skip
    with pytest.raises(RetryExhaustedError):
        await client.get("r")
    assert len(clock.sleeps) == 8
    assert all(0 <= s <= 1.0 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_honoured(make_client, upstream: Upstream, clock, status) -> None:
    """A Retry-After in seconds on a 429 or 503 sets the wait, capped by retry_max_delay."""
    upstream.route(
        "r",
        sequence(
            json({}, status=status, headers={"Retry-After": "3"}),
            json({}, status=status, headers={"Retry-After": "120"}),
            json({"ok": True}),
        ),
    )
    client = make_client(upstream.base_url, clock=clock, max_retries=3, retry_max_delay=10.0)
    assert await client.get("r") == {"ok": True}
    assert clock.sleeps == [3.0, 10.0]


async def test_retry_after_http_date_is_honoured(make_client, upstream: Upstream, clock) -> None:
    """A Retry-After given as an HTTP date sets the wait to the time until then."""
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    upstream.route("r", sequence(json({}, status=429, headers={"Retry-After": when}), json({"ok": True})))
    client = make_client(upstream.base_url, clock=clock, max_retries=1, retry_max_delay=30.0)
    assert await client.get("r") == {"ok": True}
    assert len(clock.sleeps) == 1
    assert 3.5 < clock.sleeps[0] <= 5.0


async def test_retry_after_past_the_deadline_fails_at_once(make_client, upstream: Upstream, clock) -> None:
    """A Retry-After longer than the remaining deadline is not slept: the 429 is raised."""
    upstream.route("r", json({}, status=429, headers={"Retry-After": "5"}))
    client = make_client(upstream.base_url, clock=clock, max_retries=3, retry_max_delay=30.0)
    with pytest.raises(RateLimitedError) as info:
        await client.get("r", timeout=2.0)
    assert clock.sleeps == []
    assert info.value.retry_after == 5.0
    assert upstream.hits["r"] == 1


async def test_retries_stop_at_the_deadline_on_the_injected_clock(make_client, upstream, clock) -> None:
    """The retry budget is read from the monotonic clock the client was given, not the wall."""
    upstream.route("r", json({}, status=503))
    client = make_client(
        upstream.base_url, clock=clock, max_retries=10, retry_base_delay=0.4, retry_max_delay=5.0
    )
    with pytest.raises(RetryExhaustedError) as info:
        await client.get("r", timeout=1.0)
    assert clock.sleeps == [0.4]  # the next wait (0.8) would end past the deadline
    assert info.value.attempts == 2
